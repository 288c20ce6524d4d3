"""Images decoded in threads (the scan, `tlzoo serve`) and from bytes in memory (uploads).

A decoder warning fails the image being decoded, in the thread that decodes it;
it is never turned into an error for the rest of the process. catch_warnings,
used from threads, once left "every warning is an error" installed process-wide.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlzoo.data import images
from tlzoo.data.images import BadImage, decode_rgb, load_rgb
from tlzoo.data.scan import scan_images


def jpeg_with_broken_exif() -> bytes:
    """A JPEG whose EXIF block names a tag beyond its end: Pillow warns while reading it, then goes on."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHII", 0x010F, 2, 100, 1000) + \
        struct.pack("<I", 0)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buffer, "JPEG", exif=b"Exif\x00\x00" + tiff)
    return buffer.getvalue()


@pytest.fixture
def slow_conversion(monkeypatch):
    """Each decode lingers 20 ms inside the decoder's window, so threads' decodes overlap for certain."""
    convert = images.to_rgb

    def slow(image, background=(255, 255, 255)):
        time.sleep(0.02)
        return convert(image, background)

    monkeypatch.setattr(images, "to_rgb", slow)


def test_threads_decoding_leave_the_warning_filters_as_they_were(tmp_path, slow_conversion):
    paths = []
    for index in range(24):
        Image.new("RGB", (8, 8), (index * 10, 0, 0)).save(tmp_path / f"{index}.png")
        paths.append(tmp_path / f"{index}.png")
    (tmp_path / "warns.jpg").write_bytes(jpeg_with_broken_exif())
    paths.append(tmp_path / "warns.jpg")
    filters, shown = list(warnings.filters), warnings.showwarning
    found = scan_images(paths, workers=8)
    assert warnings.filters == filters and warnings.showwarning is shown
    assert [p.name for p, r in found.items() if r.problem] == ["warns.jpg"]
    assert "decoder warning" in found[tmp_path / "warns.jpg"].problem


def test_a_warning_in_another_thread_during_a_decode_stays_a_warning(tmp_path, monkeypatch, recwarn):
    convert = images.to_rgb
    inside = threading.Event()

    def lingering(image, background=(255, 255, 255)):
        inside.set()
        time.sleep(0.3)
        return convert(image, background)

    monkeypatch.setattr(images, "to_rgb", lingering)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    decoder = threading.Thread(target=load_rgb, args=(tmp_path / "a.png",))
    decoder.start()
    assert inside.wait(10)  # the decode is under way
    warnings.warn("elsewhere", UserWarning)  # an error here while catch_warnings' "error" was process-wide
    decoder.join()
    assert [str(w.message) for w in recwarn] == ["elsewhere"]


def test_decode_rgb_is_load_rgb_for_bytes(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30, 4), dtype=np.uint8), "RGBA").save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    assert np.array_equal(np.asarray(decode_rgb(data, "a.png", (0, 0, 0))),
                          np.asarray(load_rgb(tmp_path / "a.png", (0, 0, 0))))
    for payload, reason in ((b"", "empty file (0 bytes)"), (b"text", "not an image"), (data[:70], "truncated"),
                            (jpeg_with_broken_exif(), "decoder warning")):
        with pytest.raises(BadImage) as refused:
            decode_rgb(payload, "upload.png")
        assert refused.value.path == "upload.png" and reason in refused.value.reason


def test_load_rgb_still_names_a_missing_file():
    with pytest.raises(BadImage, match="missing file"):
        load_rgb(Path("/nonexistent/x.png"))
