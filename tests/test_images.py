"""Odd but valid images all become upright 8-bit RGB with the right pixel values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

from tlzoo.data.images import BadImage, load_rgb, to_rgb


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    tensor = to_tensor(image)
    assert tensor.dtype == torch.float32 and tensor.shape[0] == 3
    return np.asarray(image)


def test_grayscale_l_and_1bit(tmp_path):
    Image.new("L", (6, 4), 77).save(tmp_path / "l.png")
    one = Image.new("1", (6, 4), 0)
    one.putpixel((0, 0), 1)
    one.save(tmp_path / "one.png")
    assert (pixels(load_rgb(tmp_path / "l.png")) == 77).all()
    bits = pixels(load_rgb(tmp_path / "one.png"))
    assert bits.shape == (4, 6, 3)
    assert (bits[0, 0] == 255).all() and (bits[1, 1] == 0).all()


def test_rgba_composited_on_the_background(tmp_path):
    image = Image.new("RGBA", (4, 4), (0, 0, 255, 0))  # fully transparent blue
    image.putpixel((0, 0), (0, 0, 255, 255))  # one opaque blue pixel
    image.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black
    image.save(tmp_path / "a.png")
    white = pixels(load_rgb(tmp_path / "a.png"))
    assert tuple(white[3, 3]) == (255, 255, 255)
    assert tuple(white[0, 0]) == (0, 0, 255)
    assert all(abs(int(v) - 127) <= 1 for v in white[0, 1])
    red = pixels(load_rgb(tmp_path / "a.png", background=(255, 0, 0)))
    assert tuple(red[3, 3]) == (255, 0, 0)


def test_la_composited(tmp_path):
    image = Image.new("LA", (3, 3), (10, 0))
    image.putpixel((1, 1), (10, 255))
    image.save(tmp_path / "la.png")
    out = pixels(load_rgb(tmp_path / "la.png", background=(0, 200, 0)))
    assert tuple(out[0, 0]) == (0, 200, 0)
    assert tuple(out[1, 1]) == (10, 10, 10)


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    image.putpixel((2, 2), 1)
    image.info["transparency"] = 0  # palette index 0 (red) is transparent
    image.save(tmp_path / "p.png", transparency=0)
    out = pixels(load_rgb(tmp_path / "p.png", background=(9, 9, 9)))
    assert tuple(out[0, 0]) == (9, 9, 9)
    assert tuple(out[2, 2]) == (0, 255, 0)


def test_grayscale_with_a_transparent_level(tmp_path):
    image = Image.new("L", (3, 3), 0)
    image.putpixel((1, 1), 90)
    image.save(tmp_path / "l.png", transparency=0)  # level 0 is transparent (PNG tRNS)
    out = pixels(load_rgb(tmp_path / "l.png", background=(0, 0, 250)))
    assert tuple(out[0, 0]) == (0, 0, 250)
    assert tuple(out[1, 1]) == (90, 90, 90)


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)  # red in CMYK
    out = pixels(load_rgb(tmp_path / "c.jpg"))
    r, g, b = out[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grayscale_scaled_not_clipped(tmp_path, suffix):
    values = np.array([[0, 40000, 65535, 255]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / f"g16{suffix}")
    with Image.open(tmp_path / f"g16{suffix}") as raw:
        assert raw.mode.startswith("I")
    out = pixels(load_rgb(tmp_path / f"g16{suffix}"))
    assert list(out[0, :, 0]) == [0, 156, 255, 1]  # 40000 / 65535 * 255 = 155.6; 255 is dark, not white
    assert (out[..., 0] == out[..., 2]).all()


def test_32bit_integer_out_of_16bit_range_uses_its_own_range():
    image = Image.fromarray(np.array([[-100, 0, 100]], dtype=np.int32), mode="I")
    out = np.asarray(to_rgb(image))
    assert list(out[0, :, 0]) == [0, 128, 255]


def test_float_tiff(tmp_path):
    unit = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    Image.fromarray(unit, mode="F").save(tmp_path / "f.tif")
    assert list(pixels(load_rgb(tmp_path / "f.tif"))[0, :, 1]) == [0, 128, 255]
    wide = np.array([[-2.0, 0.0, 2.0, np.nan]], dtype=np.float32)
    Image.fromarray(wide, mode="F").save(tmp_path / "w.tif")
    assert list(pixels(load_rgb(tmp_path / "w.tif"))[0, :, 1]) == [0, 128, 255, 128]


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (5, 5), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(tmp_path / "anim.gif") as raw:
        assert raw.n_frames == 2
    r, g, b = pixels(load_rgb(tmp_path / "anim.gif"))[2, 2].astype(int)
    assert r > 200 and b < 50


def test_exif_rotated_jpeg_is_upright(tmp_path):
    # stored 8 wide x 4 high, left half red, right half blue; orientation 6 = rotate 90 degrees clockwise to view
    stored = Image.new("RGB", (8, 4), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 4, 4))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = pixels(load_rgb(tmp_path / "rot.jpg"))
    assert out.shape == (8, 4, 3)  # now 4 wide x 8 high
    assert out[1, 2, 0] > 200 and out[1, 2, 2] < 60  # top: the stored left (red) half
    assert out[6, 2, 2] > 200 and out[6, 2, 0] < 60  # bottom: the stored right (blue) half


def test_failures_name_the_file(tmp_path):
    (tmp_path / "notes.jpg").write_text("hello")
    with pytest.raises(BadImage) as caught:
        load_rgb(tmp_path / "notes.jpg")
    assert str(tmp_path / "notes.jpg") in str(caught.value)
    assert caught.value.reason == "not an image (unknown format)"
