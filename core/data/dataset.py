"""The torch Dataset of a labelled split: (path, class index) pairs -> (transformed tensor, class index).

Each image is decoded no larger than its transform needs (Pipeline.decode_need).
A file that fails raises SampleError naming it, also from a DataLoader worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset

from tlzoo.data.images import Background, BadImage, load_rgb
from tlzoo.data.sample_errors import SampleError
from tlzoo.data.transforms import Pipeline
from tlzoo.runtime.interrupts import Interrupted

Item = tuple[Path, int]


class ImageDataset(Dataset):
    """(path, class index) pairs -> (transformed tensor, class index)."""

    def __init__(self, items: list[Item], transform: Callable, background: Background = (255, 255, 255)):
        self.items = list(items)
        self.transform = transform
        self.background = tuple(background)
        self.need = transform.decode_need() if isinstance(transform, Pipeline) else None

    def __len__(self) -> int:
        return len(self.items)

    def byte_twin(self):
        """(a twin yielding 8-bit images, mean, std) when the transform allows it (Pipeline.byte_split), else None."""
        split = self.transform.byte_split() if isinstance(self.transform, Pipeline) else None
        if split is None:
            return None
        pipeline, mean, std = split
        return ImageDataset(self.items, pipeline, self.background), mean, std

    def __getitem__(self, index: int):
        path, label = self.items[index]
        try:
            image = load_rgb(path, self.background, self.need)
        except BadImage as exc:
            raise SampleError(f"{path}: {exc.reason}") from None
        try:
            return self.transform(image), label
        except MemoryError:  # the transform's sizes, not the file, are at fault (augment sizes are capped)
            raise SampleError(f"{path}: transform ran out of memory on a {image.width}x{image.height} image",
                              "lower the sizes in data.augment; the file itself decoded fine") from None
        except Interrupted:  # a Ctrl-C raised inside the transform is not the file's fault
            raise
        except Exception as exc:  # noqa: BLE001 - name the file whatever the transform raised
            raise SampleError(f"{path}: transform failed: {type(exc).__name__}: {exc}") from exc
