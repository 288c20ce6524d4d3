"""An upload's bytes decode exactly as a file of them: rgb_from_bytes is load_rgb for data in memory."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tlzoo.data.decode_size import ShorterSide
from tlzoo.data.images import BadImage, load_rgb, rgb_from_bytes


def test_the_pixels_equal_load_rgb_of_the_same_bytes(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30, 4), dtype=np.uint8), "RGBA").save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)).save(tmp_path / "b.jpg", quality=90)
    for name, need in (("a.png", None), ("b.jpg", None), ("b.jpg", ShorterSide(64))):  # the last decodes at 1/8
        data = (tmp_path / name).read_bytes()
        from_bytes = rgb_from_bytes(data, name, (0, 0, 0), need)
        assert np.array_equal(np.asarray(from_bytes), np.asarray(load_rgb(tmp_path / name, (0, 0, 0), need)))
    assert from_bytes.size == (100, 75)


def test_bad_bytes_are_bad_images_named_as_the_upload():
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buffer, "PNG")
    for payload, reason in ((b"", "empty file (0 bytes)"), (b"text", "not an image"),
                            (buffer.getvalue()[:70], "truncated")):
        with pytest.raises(BadImage) as refused:
            rgb_from_bytes(payload, "upload.png")
        assert refused.value.path == "upload.png" and reason in refused.value.reason
