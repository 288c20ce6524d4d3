"""Decoded-image cache: decode (and resize) each image once, so later epochs do no JPEG decoding.

What is stored is the image after the transform's leading deterministic
geometry (resize to a fixed size, centre crop), as 8-bit RGB: the evaluation
transform keeps only its final crop, seed 001's pipeline its 300x300 resize.
Every later access rebuilds the PIL image from those bytes and runs the rest
of the transform, so the result is bit-identical to decoding the file again.
A pipeline that starts with a random op (random_resized_crop) gets the decoded
image at the size decoding leaves it (tlzoo.data.decode_size: a large photo at
1/2 to 1/8) instead, when the data scan measured every image.

Images live in one file per run, one slot per image, read and written with
pread/pwrite: DataLoader workers (separate processes) fill slots and every
later epoch reads them, and nothing is memory-mapped, so the run's resident
memory does not grow with the dataset (the OS page cache keeps hot slots).
"""

from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path

import numpy as np
from PIL import Image

from tlzoo.data.dataset import ImageDataset
from tlzoo.data.decode_size import reduced_size
from tlzoo.data.sample_errors import SampleError
from tlzoo.data.images import BadImage, load_rgb
from tlzoo.data.pil_ops import Compose
from tlzoo.data.transforms import Pipeline
from tlzoo.cache.store import process_alive
from tlzoo.runtime.interrupts import Interrupted


class SlotFile:
    """One uint8 slot of known shape per image in a file, plus one byte per image that says 'filled'."""

    def __init__(self, path: Path, shapes: list[tuple[int, int, int]]):
        self.path, self.shapes = path, shapes
        sizes = [int(np.prod(shape)) for shape in shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.nbytes = int(self.offsets[-1])
        with open(path, "wb") as handle:  # sparse until written; the flags sit after the slots
            handle.truncate(self.nbytes + len(shapes))
        self._fd, self._pid = None, None

    def fd(self) -> int:
        if self._pid != os.getpid():  # a DataLoader worker opens its own descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDWR), os.getpid()
        return self._fd

    def get(self, index: int) -> np.ndarray | None:
        fd = self.fd()
        if os.pread(fd, 1, self.nbytes + index) != b"\1":
            return None
        start, shape = int(self.offsets[index]), self.shapes[index]
        data = os.pread(fd, int(self.offsets[index + 1]) - start, start)
        return np.frombuffer(data, dtype=np.uint8).reshape(shape)

    def put(self, index: int, pixels: np.ndarray) -> bool:
        """Store an image whose shape matches its slot; False (nothing stored) otherwise."""
        if pixels.shape != self.shapes[index]:
            return False
        fd = self.fd()
        os.pwrite(fd, np.ascontiguousarray(pixels).tobytes(), int(self.offsets[index]))
        os.pwrite(fd, b"\1", self.nbytes + index)  # after the pixels: a reader never sees half an image
        return True

    def filled(self) -> int:
        return int(np.count_nonzero(np.fromfile(self.path, dtype=np.uint8, offset=self.nbytes)))

    def __getstate__(self):  # a worker process reopens the file by path
        return {**self.__dict__, "_fd": None, "_pid": None}


def remove_dead_slot_files(folder: Path) -> list[Path]:
    """Remove `decoded-<role>-<pid>-*.u8` files whose run is gone (a killed run never removed its own)."""
    removed = []
    for path in folder.glob("decoded-*-*-*.u8"):
        pid_text = path.name.split("-")[2]
        if pid_text.isdigit() and not process_alive(int(pid_text)):
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


def _remove(path: Path, owner: int) -> None:
    if os.getpid() == owner:  # never from a worker process holding a copy
        try:
            os.unlink(path)
        except OSError:
            pass


class DecodedImageDataset(ImageDataset):
    """ImageDataset whose images are decoded once into a SlotFile."""

    def __init__(self, items, transform, background, slots: SlotFile, leading: list, rest):
        super().__init__(items, transform, background)
        self.slots, self.leading, self.rest = slots, Compose(leading), rest

    def __getitem__(self, index: int):
        path, label = self.items[index]
        pixels = self.slots.get(index)
        if pixels is None:
            try:
                image = self.leading(load_rgb(path, self.background, self.need))
            except BadImage as exc:
                raise SampleError(f"{path}: {exc.reason}") from None
            except Interrupted:  # a Ctrl-C raised inside the transform is not the file's fault
                raise
            except Exception as exc:  # noqa: BLE001 - name the file whatever the transform raised
                raise SampleError(f"{path}: transform failed: {type(exc).__name__}: {exc}") from exc
            self.slots.put(index, np.asarray(image))
        else:
            image = Image.fromarray(pixels)
        try:
            return self.rest(image), label
        except Interrupted:
            raise
        except Exception as exc:  # noqa: BLE001
            raise SampleError(f"{path}: transform failed: {type(exc).__name__}: {exc}") from exc


def decoded_dataset(setup, sizes: dict, folder: Path, log, role: str) -> DecodedImageDataset | None:
    """A decoded-image dataset for a SourceSetup, or None (with a log line) when it cannot apply."""
    leading, size, rest = (setup.transform.split_leading_geometry() if isinstance(setup.transform, Pipeline)
                           else ([], None, setup.transform))
    if size is not None:
        shapes = [(size[0], size[1], 3)] * len(setup.items)
        what = f"{size[1]}x{size[0]} after {', '.join(type(op).__name__ for op in leading)}"
    elif all(path in sizes for path, _ in setup.items):
        need = setup.transform.decode_need() if isinstance(setup.transform, Pipeline) else None
        shapes = [(height, width, 3) for width, height in (reduced_size(need, sizes[path]) for path, _ in setup.items)]
        what = "at their decoded size" if need is None else "at the size decoding leaves them (1/2 to 1/8 if larger)"
    else:
        log(f"cache: decoded {role} images not kept: the transform starts with a random op and the image "
            "sizes are unknown")
        return None
    nbytes = sum(int(np.prod(shape)) for shape in shapes)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
        if nbytes > 0.5 * free:
            log(f"cache: decoded {role} images not kept: {nbytes / 2**20:.0f} MiB is more than half the free "
                f"space in {folder}")
            return None
        for stale in remove_dead_slot_files(folder):
            log(f"cache: removed {stale}, left by a run that was killed")
        handle, name = tempfile.mkstemp(prefix=f"decoded-{role}-{os.getpid()}-", suffix=".u8", dir=folder)
        os.close(handle)
        slots = SlotFile(Path(name), shapes)
    except OSError as exc:
        log(f"cache: decoded {role} images not kept: cannot write in {folder} ({exc.strerror})")
        return None
    dataset = DecodedImageDataset(setup.items, setup.transform, setup.background, slots, leading, rest)
    weakref.finalize(dataset, _remove, slots.path, os.getpid())
    log(f"cache: {role} images decoded once and kept as 8-bit RGB {what} ({nbytes / 2**20:.0f} MiB in {slots.path})")
    return dataset
