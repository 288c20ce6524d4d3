"""Perceptual hashes: 64 bits that survive resizing, recompression and a slight centred crop.

pHash: the image in grey at 32 x 32, its 2-D DCT, and one bit per low frequency
(the 8 x 8 top-left block, the DC term left out) saying whether it is above the
block's median. Copies resized or re-encoded keep their low frequencies, so
their hashes differ in a few bits; unrelated images in about 28. A crop moves
every frequency, so each image also gets the hashes of its central 90 % and
80 %, and two images are as close as their closest full-against-centre pair: a
copy cropped by up to about 8 % a side matches. On flowers12, of the 450,000
pairs of clearly different images (feature cosine under 0.5) one is within 8
bits, 1 in 400 within 16 and 1 in 27 within 20.
JPEGs are decoded at a fraction of their size (tlzoo.data.images' reduced
decoding), so hashing a 12-megapixel photo costs about what a thumbnail costs.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from tlzoo.data.decode_size import ShorterSide
from tlzoo.data.images import load_rgb
from tlzoo.errors import TlzooError

SIDE = 32  # the grey image the DCT sees
BLOCK = 8  # low frequencies kept: BLOCK x BLOCK less the DC term, 63 bits
CENTRES = (1.0, 0.9, 0.8)  # the whole image, then central crops (side fractions)
# (hash of a, hash of b) compared: whole against whole, and a whole image against the other's centres
COMBINATIONS = ((0, 0), (0, 1), (1, 0), (0, 2), (2, 0))
NO_HASH = np.uint64(0)  # also what a constant image hashes to; hash_distances never matches it


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: dct(x) = M @ x."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    matrix = np.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    matrix[0] /= math.sqrt(2)
    return matrix


_DCT = _dct_matrix(SIDE)


def small_grey(path: Path) -> Image.Image | None:
    """The upright image in grey, decoded small; None when it cannot be read (the scan already said why)."""
    try:  # at least 4x the DCT side: libjpeg decodes at 1/2 .. 1/8 where that leaves enough
        return load_rgb(path, need=ShorterSide(SIDE * 4)).convert("L")
    except (TlzooError, OSError, ValueError):  # gone or damaged since the scan: no hash, its features still count
        return None


def phash(grey: Image.Image, centre: float = 1.0) -> np.uint64:
    """The pHash of the central `centre` fraction (per side) of a grey image."""
    width, height = grey.size
    box = (width * (1 - centre) / 2, height * (1 - centre) / 2, width * (1 + centre) / 2, height * (1 + centre) / 2)
    pixels = np.asarray(grey.resize((SIDE, SIDE), Image.Resampling.BOX, box=box), dtype=np.float64)
    low = (_DCT @ pixels @ _DCT.T)[:BLOCK, :BLOCK].flatten()[1:]  # the DC term is overall brightness only
    value = 0
    for bit in low > np.median(low):
        value = value << 1 | int(bit)
    return np.uint64(value)


def image_hashes(path: Path) -> np.ndarray:
    """(len(CENTRES),) uint64 hashes of one file: NO_HASH where it cannot be read."""
    grey = small_grey(Path(path))
    if grey is None:
        return np.full(len(CENTRES), NO_HASH, dtype=np.uint64)
    return np.array([phash(grey, centre) for centre in CENTRES], dtype=np.uint64)


def hash_files(paths: list[Path], threads: int = 4) -> np.ndarray:
    """(n, len(CENTRES)) hashes of `paths`, decoded in a few threads (Pillow releases the GIL while decoding)."""
    if not paths:
        return np.zeros((0, len(CENTRES)), dtype=np.uint64)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return np.stack(list(pool.map(image_hashes, paths)))


_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x).astype(np.int16)
    count = np.zeros(x.shape, dtype=np.int16)
    for shift in range(0, 64, 8):
        count += _POPCOUNT[(x >> np.uint64(shift)) & np.uint64(0xFF)]
    return count


def hash_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) bits between images: the smallest over COMBINATIONS of `a` (n, 3) against `b` (m, 3) hashes;
    64 (farther than any real distance) where either image has no hash."""
    distance = np.full((a.shape[0], b.shape[0]), 64, dtype=np.int16)
    for i, j in COMBINATIONS:
        np.minimum(distance, popcount(np.bitwise_xor(a[:, i][:, None], b[:, j][None, :])), out=distance)
    missing = (a[:, 0] == NO_HASH)[:, None] | (b[:, 0] == NO_HASH)[None, :]
    distance[missing] = 64
    return distance
