"""Within a run the scan's decoded images are taken back by their first use (tlzoo.data.decoded_once)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tlzoo.data import decoded_once
from tlzoo.data.decode_size import ShorterSide
from tlzoo.data.decoded_once import DecodedStore, active_store, keeping_decoded
from tlzoo.data.images import decode_rgb
from tlzoo.data.phash import HASH_NEED
from tlzoo.data.scan import scan_images


def photo(path, size=(2816, 2112)):
    rng = np.random.default_rng(sum(size))
    small = Image.fromarray(rng.integers(0, 256, (size[1] // 40, size[0] // 40, 3), dtype=np.uint8))
    small.resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
    return path


def test_the_first_use_gets_the_scans_pixels_without_opening_the_file(tmp_path, monkeypatch):
    paths = [photo(tmp_path / f"{n}.jpg", (2816 + 8 * n, 2112)) for n in range(3)]
    need = ShorterSide(256)  # lite0's evaluation resize: the same 1/8 decode as the hash's need
    fresh = [decode_rgb(path, need=need) for path in paths]
    with keeping_decoded() as store:
        scan_images(paths)
        assert active_store() is store and store.used == sum(i.width * i.height * 3 for i, _ in fresh)
        real_open = Image.open
        monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("the file was decoded again"))
        for path, (image, full) in zip(paths, fresh):
            kept, kept_full = decode_rgb(path, need=need)
            assert kept_full == full and np.array_equal(np.asarray(kept), np.asarray(image))
        assert store.used == 0
        monkeypatch.setattr(Image, "open", real_open)
        again, _ = decode_rgb(paths[0], need=need)  # taken once: the second use decodes
        assert np.array_equal(np.asarray(again), np.asarray(fresh[0][0]))
    assert active_store() is None


def test_another_scale_or_background_decodes_the_file(tmp_path):
    path = photo(tmp_path / "a.jpg")
    with keeping_decoded() as store:
        scan_images([path])
        larger, _ = decode_rgb(path, need=ShorterSide(600))  # 1/2 scale, not the scan's 1/8
        assert larger.size == (1408, 1056) and store.used > 0
        assert store.take(path, (0, 0, 0), ShorterSide(256)) is None  # another background
        assert store.take(path, (255, 255, 255), ShorterSide(256)) is not None


def test_the_store_keeps_no_more_than_its_budget_and_nothing_outside_a_run(tmp_path):
    paths = [photo(tmp_path / f"{n}.jpg") for n in range(3)]
    one = 352 * 264 * 3  # 2816 x 2112 at 1/8
    with keeping_decoded(budget=2 * one) as store:
        scan_images(paths)
        assert store.used == 2 * one
    scan_images(paths)  # no run: nothing kept anywhere
    assert active_store() is None
    store = DecodedStore(budget=one)
    image, full = decode_rgb(paths[0], need=HASH_NEED)
    assert store.put(paths[0], (255, 255, 255), HASH_NEED, image, full)
    assert not store.put(paths[1], (255, 255, 255), HASH_NEED, image, full)
    store.clear()
    assert store.used == 0 and store.take(paths[0], (255, 255, 255), HASH_NEED) is None


def test_an_image_decoded_at_full_size_is_not_kept(tmp_path):
    """A 224-pixel file decodes again in a millisecond: holding 10,000 of them cost 0.7 GiB for nothing."""
    small = photo(tmp_path / "small.jpg", (224, 224))
    with keeping_decoded() as store:
        assert scan_images([small])[small].problem is None
        assert store.used == 0


def test_a_nested_block_shares_the_store(monkeypatch):
    with keeping_decoded() as outer:
        with keeping_decoded() as inner:
            assert inner is outer
        assert active_store() is outer
    assert decoded_once.active_store() is None
