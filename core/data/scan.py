"""The scan before training: decode every image, in threads, and say what is wrong with each bad one.

Pillow opens a truncated JPEG or PNG without complaint and fails only when the
pixels are decoded, so the scan decodes all the data (through decode_rgb, the
same path training uses). It needs the pixels only for the perceptual hashes
the data findings compare (tlzoo.data.phash), so a JPEG is decoded no larger
than they need, 1/8 scale for a photo: libjpeg still entropy-decodes every
coefficient, and finds the same damage, at a fraction of the cost (a 12 Mpx
photo: about 10 ms against 45); the findings then decode nothing again, and
within a run the first epoch takes the decoded image back
(tlzoo.data.decoded_once).
Decoders release the GIL, so a thread pool scales with cores.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tlzoo.data.decoded_once import active_store
from tlzoo.data.images import BadImage, decode_rgb
from tlzoo.data.phash import HASH_NEED, rgb_hashes

ImageSize = tuple[int, int]  # (width, height) after EXIF rotation
DEFAULT_BACKGROUND = (255, 255, 255)  # transparent pixels on white, as decode_rgb's default and a spec's


@dataclass(frozen=True)
class ScanResult:
    problem: str | None  # why the file is unusable; None when it decoded
    size: ImageSize | None = None
    hashes: tuple[int, ...] | None = None  # tlzoo.data.phash.rgb_hashes of the image (a tuple: results compare)


def check_image(path: Path) -> ScanResult:
    """Decode one file (no larger than its hashes need); a problem is reported, never raised."""
    try:
        image, size = decode_rgb(path, DEFAULT_BACKGROUND, HASH_NEED)
    except BadImage as exc:
        return ScanResult(exc.reason)
    hashes = tuple(int(h) for h in rgb_hashes(image))
    store = active_store()
    if store is not None:  # a run's first epoch takes it back instead of decoding the file again
        store.put(path, DEFAULT_BACKGROUND, HASH_NEED, image, size)
    return ScanResult(None, size, hashes)


def default_workers() -> int:
    return max(1, min(16, 2 * (os.cpu_count() or 1)))


def scan_images(paths: list[Path], workers: int | None = None) -> dict[Path, ScanResult]:
    """Path -> ScanResult for every path, checked in a thread pool."""
    paths = list(paths)
    workers = workers or default_workers()
    if workers == 1 or len(paths) < 2:
        return {path: check_image(path) for path in paths}
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tlzoo-scan")
    try:
        return dict(zip(paths, pool.map(check_image, paths)))
    finally:
        # interrupted (SIGTERM, Ctrl-C): drop the files not started yet rather than scan them all first
        pool.shutdown(wait=False, cancel_futures=True)
