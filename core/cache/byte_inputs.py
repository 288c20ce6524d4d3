"""8-bit images for frozen passes: loader workers decode, the main process normalizes whole batches.

ToTensor + Normalize on one image cost a DataLoader worker about 1.1 ms on the
2-core test machine, as much as the resize before it, and a float image is four
times the bytes of an 8-bit one to hand from the worker to the main process.
When a transform ends in exactly those two steps, a cache build asks the
worker for the 8-bit image instead and finishes each batch with the same
elementwise operations in the same order (x / 255, - mean, / std), vectorised:
the result is bit-identical, so cache keys and exactness are unaffected.
"""

from __future__ import annotations

import torch

from tlzoo.data.dataset import ImageDataset


class ByteNormalize:
    """uint8 (N, C, H, W) -> float32 normalized, exactly as ToTensor then Normalize give per image."""

    def __init__(self, mean, std):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32).div_(255).sub_(self.mean.to(x.device)).div_(self.std.to(x.device))


def byte_variant(dataset) -> tuple[ImageDataset, ByteNormalize] | None:
    """(a twin of `dataset` yielding uint8 images, the batch step that finishes them), or None.

    None unless `dataset` is a plain ImageDataset that has such a twin
    (ImageDataset.byte_twin): anything else (random erasing, a decoded-image
    cache) keeps the per-image path.
    """
    twin = dataset.byte_twin() if type(dataset) is ImageDataset else None
    if twin is None:
        return None
    images, mean, std = twin
    return images, ByteNormalize(mean, std)
