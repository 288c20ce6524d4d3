"""Where cached activations live: a tensor in RAM, or a memory-mapped file when RAM is short.

A store holds `items x views` activations of one shape. It lives in RAM while
the memory budget allows and spills to a memory-mapped file otherwise;
16-bit values go to disk as raw 16-bit words (bfloat16 as uint16, which numpy
lacks), so the file is the tensor's bytes and nothing else.

Finished stores are published under `<cache dir>/activations/<key>/` by an
atomic rename of a private temporary folder, so two runs never see each
other's half-written files, and a later run with the same key maps them again.
A run builds an entry only while it holds `<key>.lock` (fcntl.flock), so a
second run with the same key waits and then reuses the entry; the kernel drops
the lock when its holder dies, so a crash never blocks the next run. A private
folder is `building-<pid>-*`, flock-ed by its builder: one whose process is
gone and whose lock is free is provably dead, and the next run removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tlzoo.cache.keys import KEY_FORMAT

VALUES_FILE = "values.bin"
META_FILE = "meta.json"
BUILDING_PREFIX = "building-"
LOCK_SUFFIX = ".lock"
# torch dtype <-> the numpy type its bytes are stored as (numpy has no bfloat16)
STORAGE = {
    "float32": (torch.float32, np.float32),
    "float16": (torch.float16, np.float16),
    "bfloat16": (torch.bfloat16, np.uint16),
}


@dataclass
class MemoryBudget:
    """RAM shared by every store of a run (cache.memory_mb)."""

    remaining: int  # bytes

    def take(self, nbytes: int) -> bool:
        if nbytes > self.remaining:
            return False
        self.remaining -= nbytes
        return True

    def give_back(self, nbytes: int) -> None:
        self.remaining += nbytes


def as_torch(array: np.ndarray, dtype_name: str) -> torch.Tensor:
    """A tensor sharing `array`'s memory, reinterpreted as the stored dtype."""
    torch_dtype, _ = STORAGE[dtype_name]
    if dtype_name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)  # torch indexes int16, not uint16
    return torch.from_numpy(array)


class ActivationStore:
    """`items x views x shape` activations; `write` once per slot, `read` many times."""

    def __init__(self, data: torch.Tensor, dtype_name: str, in_memory: bool, folder: Path | None,
                 budget: MemoryBudget | None, mapped: np.ndarray | None = None):
        self.data = data
        self.dtype_name = dtype_name
        self.in_memory = in_memory
        self.folder = folder  # the private folder while building, the published one after
        self.budget = budget
        self._mapped = mapped  # keeps the memory map open while `data` views it
        self.published = False
        self._owner_fd: int | None = None  # flock-ed while the private folder is being built

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    @classmethod
    def create(cls, items: int, views: int, shape: tuple[int, ...], dtype_name: str,
               budget: MemoryBudget, work_dir: Path) -> "ActivationStore":
        """An empty store in RAM if the budget allows, else a memory-mapped file in `work_dir`."""
        torch_dtype, numpy_dtype = STORAGE[dtype_name]
        full = (items, views, *shape)
        nbytes = int(np.prod(full)) * np.dtype(numpy_dtype).itemsize
        work_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{BUILDING_PREFIX}{os.getpid()}-", dir=work_dir))
        owner_fd = os.open(folder, os.O_RDONLY)
        fcntl.flock(owner_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh folder: nobody else holds it
        if budget.take(nbytes):
            store = cls(torch.empty(full, dtype=torch_dtype), dtype_name, True, folder, budget)
        else:
            mapped = np.memmap(folder / VALUES_FILE, dtype=numpy_dtype, mode="w+", shape=full)
            store = cls(as_torch(mapped, dtype_name), dtype_name, False, folder, None, mapped)
        store._owner_fd = owner_fd
        return store

    def _release_owner_lock(self) -> None:
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None

    @classmethod
    def open(cls, folder: Path, meta: dict, budget: MemoryBudget) -> "ActivationStore | None":
        """A published store, loaded into RAM if the budget allows, else mapped; None if unusable."""
        dtype_name = meta.get("dtype")
        if dtype_name not in STORAGE:
            return None
        _, numpy_dtype = STORAGE[dtype_name]
        shape = tuple(meta["shape"])
        path = folder / VALUES_FILE
        nbytes = int(np.prod(shape)) * np.dtype(numpy_dtype).itemsize
        try:
            if path.stat().st_size != nbytes:
                return None
            if budget.take(nbytes):
                array = np.fromfile(path, dtype=numpy_dtype).reshape(shape)
                store = cls(as_torch(array, dtype_name).clone(), dtype_name, True, folder, budget)
            else:  # copy-on-write: readable like RAM, and nothing is ever written back
                mapped = np.memmap(path, dtype=numpy_dtype, mode="c", shape=shape)
                store = cls(as_torch(mapped, dtype_name), dtype_name, False, folder, None, mapped)
        except (OSError, ValueError):
            return None
        store.published = True
        return store

    def write(self, rows: torch.Tensor, views: torch.Tensor, values: torch.Tensor) -> None:
        self.data[rows, views] = values.detach().to("cpu", self.data.dtype)

    def read(self, rows: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """fp32 activations of (row, view) pairs, in their order."""
        return self.data[rows, views].float()

    def publish(self, final: Path, meta: dict) -> bool:
        """Move the finished store to `final` (atomic rename); False if another run got there first."""
        if self.published or self.folder is None:
            return False
        if self.in_memory:
            array = self.data.view(torch.int16) if self.dtype_name == "bfloat16" else self.data
            array.numpy().tofile(self.folder / VALUES_FILE)
        else:
            self._mapped.flush()
        meta = {**meta, "format": KEY_FORMAT, "dtype": self.dtype_name, "shape": list(self.data.shape)}
        (self.folder / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        try:
            os.rename(self.folder, final)
        except OSError:  # published meanwhile by a run with the same key: ours is identical, drop it
            return False
        self.folder, self.published = final, True
        self._release_owner_lock()
        return True

    def close(self) -> None:
        """Release RAM; a store that was never published leaves no files behind."""
        if self.in_memory and self.budget is not None:
            self.budget.give_back(self.nbytes)
            self.budget = None
        self.data = torch.empty(0)
        self._mapped = None
        if not self.published and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        self._release_owner_lock()


def read_meta(folder: Path, any_format: bool = False) -> dict | None:
    """An entry's meta.json; of this key format only, unless `any_format` (listing and clearing older entries)."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not str(meta.get("format", "")).startswith(KEY_FORMAT.split("/")[0] + "/"):
        return None
    return meta if any_format or meta.get("format") == KEY_FORMAT else None


@contextlib.contextmanager
def key_lock(root: Path, key: str, log=None):
    """Hold `<root>/<key>.lock` exclusively; says so in the log when another run holds it first."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{key}{LOCK_SUFFIX}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log is not None:
                log(f"cache: another run is computing these activations; waiting for it ({path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def dead_build(folder: Path) -> bool:
    """A `building-<pid>-*` folder whose process is gone and whose flock nobody holds."""
    pid_text = folder.name[len(BUILDING_PREFIX):].split("-", 1)[0]
    if not pid_text.isdigit() or process_alive(int(pid_text)):
        return False  # a live builder (or a pid reused since: left for `tlzoo cache clear`)
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_dead_builds(root: Path) -> list[Path]:
    """Remove the private folders of builds that were killed; returns what was removed."""
    if not root.is_dir():
        return []
    removed = []
    for folder in sorted(root.glob(BUILDING_PREFIX + "*")):
        if folder.is_dir() and dead_build(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@dataclass
class CacheEntry:
    """A published entry, as `tlzoo cache info` lists it."""

    path: Path
    key: str
    backbone: str
    role: str
    boundary: int | None
    nbytes: int
    created: float


def folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            pass
    return total


def list_entries(root: Path) -> list[CacheEntry]:
    """Every published entry under `root` (<cache dir>/activations), oldest first."""
    if not root.is_dir():
        return []
    entries = []
    for folder in root.iterdir():
        meta = read_meta(folder, any_format=True) if folder.is_dir() else None
        if meta is None:
            continue
        parts = meta.get("parts") if isinstance(meta.get("parts"), dict) else {}
        created = meta.get("created")
        entries.append(CacheEntry(folder, folder.name, str(parts.get("backbone", "?")), str(parts.get("role", "?")),
                                  meta.get("boundary"), folder_bytes(folder),
                                  created if isinstance(created, (int, float)) else 0.0))
    return sorted(entries, key=lambda entry: entry.created)


def pending_builds(root: Path) -> list[Path]:
    """Private folders of builds in progress (or killed and not yet removed)."""
    return sorted(p for p in root.glob(BUILDING_PREFIX + "*") if p.is_dir()) if root.is_dir() else []


def remove_idle_locks(root: Path) -> int:
    """Remove `<key>.lock` files no run holds (`tlzoo cache clear`); returns how many."""
    count = 0
    for path in root.glob("*" + LOCK_SUFFIX) if root.is_dir() else []:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()  # a run that opened it before still locks its own (now nameless) copy: harmless
            count += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return count
