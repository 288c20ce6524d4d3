"""Images the scan decoded, kept for their first use, so that a phone photo is decoded once before training.

The scan decodes every image (at the perceptual hash's need: 1/8 scale for a
12 Mpx photo); the first epoch, or the activation cache's build, then decodes it
again at its transform's need, which for a photo is the same 1/8 scale. While
a run holds a store (`keeping_decoded`), the scan puts each image it decoded in
it, up to a byte budget, and `decode_rgb` hands it back when the same file is
asked for with the same background at the same scale: the same pixels, without
a second decode. Only images the scan decoded reduced are kept (a small file
decodes again in a millisecond), and they are taken back when the scales meet:
for photos whose shorter side is at least 8x the resize (2048 pixels for
lite0's 256: a 12 Mpx photo's 3024); others are decoded again as before. An
entry is taken, not copied, and the store is emptied after the first epoch
and dropped when the run's training ends; outside a run nothing is kept.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tlzoo.data.decode_size import SizeNeed, reduction

DEFAULT_BUDGET = 512 * 2**20  # bytes of RGB pixels: about 900 12 Mpx photos at 1/8 scale


@dataclass
class _Kept:
    image: Image.Image
    full: tuple[int, int]  # the file's upright size
    factor: int  # the reduction it was decoded at
    nbytes: int  # of its pixels, counted against the budget


class DecodedStore:
    def __init__(self, budget: int = DEFAULT_BUDGET):
        self.budget, self.used = budget, 0
        self._entries: dict[tuple[Path, tuple], _Kept] = {}
        self._lock, self._pid = threading.Lock(), os.getpid()

    def _locked(self) -> threading.Lock:
        if self._pid != os.getpid():  # a forked loader worker: a lock held at fork would never be released
            self._lock, self._pid = threading.Lock(), os.getpid()
        return self._lock

    def put(self, path: Path, background: tuple, need: SizeNeed, image: Image.Image, full: tuple[int, int]) -> bool:
        """Keep `image`, decoded from `path` for `need`, while the budget lasts; True when kept. An image decoded
        at full size is not kept: decoding a small file again costs less than holding it (10,000 images of 224
        pixels held 0.7 GiB more at the peak of a run, for no time saved)."""
        kept = _Kept(image, full, reduction(need, *full), image.width * image.height * len(image.getbands()))
        with self._locked():
            if kept.factor == 1 or self.used + kept.nbytes > self.budget:
                return False
            self._entries[(Path(path), tuple(background))] = kept
            self.used += kept.nbytes
            return True

    def clear(self) -> None:
        """Drop what is left: after the first epoch nothing is taken any more."""
        with self._locked():
            self._entries.clear()
            self.used = 0

    def take(self, path: Path, background: tuple, need: SizeNeed | None) -> tuple[Image.Image, tuple[int, int]] | None:
        """(image, upright full size) when `path` was kept at the scale `need` decodes it at; it leaves the store."""
        key = (Path(path), tuple(background))
        with self._locked():
            kept = self._entries.get(key)
            if kept is None or reduction(need, *kept.full) != kept.factor:
                return None
            del self._entries[key]
            self.used -= kept.nbytes
            return kept.image, kept.full


_store: DecodedStore | None = None


def active_store() -> DecodedStore | None:
    return _store


@contextlib.contextmanager
def keeping_decoded(budget: int = DEFAULT_BUDGET):
    """Within the block, the scan keeps what it decodes for the first use (a nested block shares the store)."""
    global _store
    if _store is not None:
        yield _store
        return
    _store = DecodedStore(budget)
    try:
        yield _store
    finally:
        _store = None
