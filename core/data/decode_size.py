"""How far an image may shrink while it is decoded, given the transform that follows.

A 4032x3024 phone photo that the evaluation transform resizes to 256 pixels
does not need its 12 million pixels decoded: libjpeg can decode a JPEG at 1/2,
1/4 or 1/8 of its size (DCT scaling, Pillow's `draft`), five times faster at
1/8, and any other format can be halved by `Image.reduce` (a box filter) after
decoding, before the costly resize. A *need* says how large the decoded image
must stay: the largest reduction r in 8, 4, 2 whose result is still at least
what the transform's first step takes from it is applied, then the transform
runs as before. Resizing from an image already within 2x of the target is
what Pillow's own `reducing_gap` does; benchmarks/photos_bench.py measures the
pixel difference against the full decode.

Needs are plain values, computed from the upright size (after EXIF rotation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

REDUCTIONS = (8, 4, 2)  # the scales libjpeg decodes at, largest first
RULE = "reduced-to-need/1"  # in cache keys: activations of images decoded otherwise are not reused


class SizeNeed(Protocol):
    def least(self, width: int, height: int) -> tuple[float, float]:
        """The smallest (width, height) the decoded image of an upright width x height image may have."""


@dataclass(frozen=True)
class ShorterSide:
    """A resize of the shorter side to `side` (torchvision's Resize(int)); the aspect ratio is kept."""

    side: int

    def least(self, width: int, height: int) -> tuple[float, float]:
        scale = self.side / min(width, height)
        return width * scale, height * scale


@dataclass(frozen=True)
class LongerSide:
    """A fit into a `side` x `side` box (a thumbnail)."""

    side: int

    def least(self, width: int, height: int) -> tuple[float, float]:
        scale = self.side / max(width, height)
        return width * scale, height * scale


@dataclass(frozen=True)
class FixedSize:
    """A resize to exactly width x height, whatever the aspect ratio."""

    width: int
    height: int

    def least(self, width: int, height: int) -> tuple[float, float]:
        return float(self.width), float(self.height)


@dataclass(frozen=True)
class CropArea:
    """A random resized crop: a box of `scale` (min, max) of the area and `ratio` (min, max) width/height,
    resized to width x height. Enough pixels that the smallest box it can draw still has the output's
    pixels on each side: no box is upsampled that would not be upsampled on the full image too."""

    width: int
    height: int
    scale: tuple[float, float]
    ratio: tuple[float, float]

    def least(self, width: int, height: int) -> tuple[float, float]:
        low_scale = max(self.scale[0], 1e-6)
        low_ratio, high_ratio = min(self.ratio), max(self.ratio)
        # the box is sqrt(area * s * r) wide and sqrt(area * s / r) high
        area = max(self.width ** 2 / (low_scale * low_ratio), self.height ** 2 * high_ratio / low_scale)
        factor = math.sqrt(area / (width * height))
        return width * factor, height * factor


def reduction(need: SizeNeed | None, width: int, height: int) -> int:
    """The largest r in 8, 4, 2 such that the image at 1/r (rounded up) still meets `need`; 1 when none does."""
    if need is None:
        return 1
    least_width, least_height = need.least(width, height)
    for r in REDUCTIONS:
        if math.ceil(width / r) >= least_width and math.ceil(height / r) >= least_height:
            return r
    return 1


def reduced_size(need: SizeNeed | None, size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of an upright `size` image decoded for `need` (sides rounded up, as libjpeg and
    Image.reduce round them)."""
    r = reduction(need, *size)
    return math.ceil(size[0] / r), math.ceil(size[1] / r)
