"""The deterministic image ops of evaluation and prediction, on PIL images, without torchvision.

Importing torchvision costs about a second (it imports torch._dynamo), which is
most of what `tlzoo predict` of one image would wait for. These ops compute what
torchvision.transforms' Resize, CenterCrop, ToTensor, PILToTensor, Normalize and
Compose compute on a PIL image, with the same Pillow calls and tensor arithmetic,
so outputs are bit-identical (tests/test_pil_ops.py), and describe themselves with
the same repr (the activation cache keys transforms by it, so its entries stay valid).
The random training ops still come from torchvision (tlzoo.data.augment_ops).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

# torchvision's InterpolationMode names -> Pillow's resampling filters
RESAMPLING = {
    "nearest": Image.NEAREST,
    "nearest-exact": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "box": Image.BOX,
    "hamming": Image.HAMMING,
    "lanczos": Image.LANCZOS,
}


def interpolation_name(name: str) -> str:
    """A known resampling name as it is; anything else (timm's 'random') falls back to bilinear."""
    return name if name in RESAMPLING else "bilinear"


def resized_size(width: int, height: int, size: int | tuple[int, int]) -> tuple[int, int]:
    """(width, height) after a resize to `size`: (h, w) exactly, or an int for the shorter side (the longer
    one scaled and truncated, as torchvision does)."""
    if not isinstance(size, int):
        if len(size) == 2:
            return size[1], size[0]
        size = size[0]
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


class Compose:
    def __init__(self, transforms: list):
        self.transforms = list(transforms)

    def __call__(self, image):
        for transform in self.transforms:
            image = transform(image)
        return image

    def __repr__(self) -> str:
        return "Compose(" + "".join(f"\n    {t}" for t in self.transforms) + "\n)"


class Resize:
    """Resize to (h, w), or the shorter side to an int; Pillow always antialiases (`antialias` is only
    recorded, as torchvision ignores it for PIL images)."""

    def __init__(self, size: int | tuple[int, int] | list[int], interpolation: str = "bilinear",
                 antialias: bool = True):
        self.size = size if isinstance(size, int) else tuple(size)
        self.interpolation = interpolation_name(interpolation)
        self.max_size = None
        self.antialias = antialias

    def __call__(self, image: Image.Image) -> Image.Image:
        target = resized_size(image.width, image.height, self.size)
        if target == image.size:
            return image
        return image.resize(target, RESAMPLING[self.interpolation])

    def __repr__(self) -> str:
        return (f"Resize(size={self.size}, interpolation={self.interpolation}, max_size=None, "
                f"antialias={self.antialias})")


class CenterCrop:
    """The centre (h, w) of an image; a smaller image is first padded with black on every short side."""

    def __init__(self, size: int | tuple[int, int] | list[int]):
        self.size = (size, size) if isinstance(size, int) else (size[0], size[0]) if len(size) == 1 else tuple(size)

    def __call__(self, image: Image.Image) -> Image.Image:
        height, width = self.size
        if width > image.width or height > image.height:
            wide, tall = max(0, width - image.width), max(0, height - image.height)
            fill = 0 if len(image.getbands()) == 1 else (0,) * len(image.getbands())
            image = ImageOps.expand(image, (wide // 2, tall // 2, (wide + 1) // 2, (tall + 1) // 2), fill)
            if image.size == (width, height):
                return image
        top = int(round((image.height - height) / 2.0))
        left = int(round((image.width - width) / 2.0))
        return image.crop((left, top, left + width, top + height))

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"


def _pixels(image: Image.Image) -> torch.Tensor:
    """An 8-bit image as a (C, H, W) uint8 tensor view."""
    if not isinstance(image, Image.Image) or image.mode not in ("RGB", "L", "RGBA"):
        raise TypeError(f"expected an 8-bit PIL image (RGB, L or RGBA), got {image!r}")
    array = np.array(image, dtype=np.uint8, copy=True)
    return torch.from_numpy(array).view(image.height, image.width, len(image.getbands())).permute(2, 0, 1)


class ToTensor:
    """uint8 image -> float tensor in [0, 1], channels first."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return _pixels(image).contiguous().to(torch.get_default_dtype()).div(255)

    def __repr__(self) -> str:
        return "ToTensor()"


class PILToTensor:
    """uint8 image -> uint8 tensor, channels first (the batch divides by 255 later)."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return _pixels(image)

    def __repr__(self) -> str:
        return "PILToTensor()"


class Normalize:
    """(x - mean) / std per channel, on a copy."""

    def __init__(self, mean, std):
        self.mean, self.std = mean, std
        if any(value == 0 for value in std):
            raise ValueError(f"std evaluated to zero after conversion to float, leading to division by zero: {std}")

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return tensor.clone().sub_(mean).div_(std)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"
