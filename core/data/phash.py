"""Perceptual hashes of a decoded image: 64 bits that survive resizing, recompression and a slight centred crop.

pHash: the image in grey at 32 x 32, its 2-D DCT, and one bit per low frequency
(the 8 x 8 top-left block, the DC term left out) saying whether it is above the
block's median. Copies resized or re-encoded keep their low frequencies, so
their hashes differ in a few bits; unrelated images in about 28. A crop moves
every frequency, so each image also gets the hashes of its central 90 % and
80 % (tlzoo.findings.hashing compares them).

They live with the data because the scan computes them from the pixels it
decodes anyway: a 12-megapixel JPEG is then decoded once, not once for the
scan and again for the findings.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from tlzoo.data.decode_size import ShorterSide

SIDE = 32  # the grey image the DCT sees
BLOCK = 8  # low frequencies kept: BLOCK x BLOCK less the DC term, 63 bits
CENTRES = (1.0, 0.9, 0.8)  # the whole image, then central crops (side fractions)
NO_HASH = np.uint64(0)  # also what a constant image hashes to; distances never match it
# at least 4x the DCT side: libjpeg decodes at 1/2 .. 1/8 where that leaves enough
HASH_NEED = ShorterSide(SIDE * 4)


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: dct(x) = M @ x."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    matrix = np.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    matrix[0] /= math.sqrt(2)
    return matrix


_DCT = _dct_matrix(SIDE)


def grey_square(grey: Image.Image, centre: float = 1.0) -> np.ndarray:
    """(SIDE, SIDE) float pixels of the central `centre` fraction (per side) of a grey image: what a hash sees."""
    width, height = grey.size
    box = (width * (1 - centre) / 2, height * (1 - centre) / 2, width * (1 + centre) / 2, height * (1 + centre) / 2)
    return np.asarray(grey.resize((SIDE, SIDE), Image.Resampling.BOX, box=box), dtype=np.float64)


def phash(grey: Image.Image, centre: float = 1.0) -> np.uint64:
    """The pHash of the central `centre` fraction (per side) of a grey image."""
    pixels = grey_square(grey, centre)
    low = (_DCT @ pixels @ _DCT.T)[:BLOCK, :BLOCK].flatten()[1:]  # the DC term is overall brightness only
    value = 0
    for bit in low > np.median(low):
        value = value << 1 | int(bit)
    return np.uint64(value)


def rgb_hashes(image: Image.Image) -> np.ndarray:
    """(len(CENTRES),) uint64 hashes of an image decoded at HASH_NEED or larger."""
    grey = image.convert("L")
    return np.array([phash(grey, centre) for centre in CENTRES], dtype=np.uint64)


def missing_hashes() -> np.ndarray:
    """The hashes of an image that could not be read: NO_HASH for each centre."""
    return np.full(len(CENTRES), NO_HASH, dtype=np.uint64)
