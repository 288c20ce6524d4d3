"""Perceptual hashes of image files and the distance between two images' hashes.

The hash itself is tlzoo.data.phash's (the scan computes it from the pixels it
decodes; a run's findings reuse those). Files the scan did not see are decoded
here, JPEGs at a fraction of their size, so hashing a 12-megapixel photo costs
about what a thumbnail costs. Two images are as close as their closest
full-against-centre pair: a copy cropped by up to about 8 % a side matches. On
flowers12, of the 450,000 pairs of clearly different images (feature cosine
under 0.5) one is within 8 bits, 1 in 400 within 16 and 1 in 27 within 20.

Where most of an image is smooth (a gradient behind a letter) or there are few
pixels to begin with (an 8-pixel scan), the 63 bits say less: unrelated images
match within 8 bits by the hundred. So a match can be checked on the pixels
themselves (`pixel_agreement`): the correlation of the grey 32 x 32 images the
hashes were computed from, averaged to 16 x 16 first (at 32 x 32, a 64-pixel
texture and its copy at 48 pixels correlated only 0.93-0.96: the resizes blur the
finest detail differently; at 16 x 16, 0.97-0.99).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tlzoo.data.images import load_rgb
from tlzoo.data.phash import CENTRES, HASH_NEED, NO_HASH, SIDE, grey_square, missing_hashes, rgb_hashes
from tlzoo.errors import TlzooError

# (hash of a, hash of b) compared: whole against whole, and a whole image against the other's centres
COMBINATIONS = ((0, 0), (0, 1), (1, 0), (0, 2), (2, 0))
THUMBNAIL = SIDE // 2  # the side pixel_agreement compares at: the hash's grey image, 2 x 2 averaged


def image_hashes(path: Path) -> np.ndarray:
    """(len(CENTRES),) uint64 hashes of one file: NO_HASH where it cannot be read."""
    try:
        image = load_rgb(Path(path), need=HASH_NEED)
    except (TlzooError, OSError, ValueError):  # gone or damaged since the scan: no hash, its features still count
        return missing_hashes()
    return rgb_hashes(image)


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


def grey_thumbnails(path: Path) -> np.ndarray | None:
    """(len(CENTRES), THUMBNAIL ** 2): each centre's grey pixels, 2 x 2 averaged, less their mean, at unit length
    (zeros for a flat image); None where the file cannot be read."""
    try:
        grey = load_rgb(Path(path), need=HASH_NEED).convert("L")
    except (TlzooError, OSError, ValueError):
        return None
    rows = np.stack([grey_square(grey, centre).reshape(THUMBNAIL, 2, THUMBNAIL, 2).mean((1, 3)).ravel()
                     for centre in CENTRES])
    rows -= rows.mean(1, keepdims=True)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)


def pixel_agreement(pairs: list[tuple[Path, Path]], threads: int = 4) -> list[float]:
    """Each pair's correlation of grey thumbnails, the best over COMBINATIONS, as the hash distance takes its
    smallest (1: the same picture); -1 where a file cannot be read."""
    paths = sorted({path for pair in pairs for path in pair})
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        thumbnails = dict(zip(paths, pool.map(grey_thumbnails, paths)))
    agreement = []
    for a, b in pairs:
        first, second = thumbnails[a], thumbnails[b]
        agreement.append(-1.0 if first is None or second is None
                         else max(float(first[i] @ second[j]) for i, j in COMBINATIONS))
    return agreement
