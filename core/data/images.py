"""Robust image loading: every odd-but-valid image becomes an upright 8-bit RGB picture.

Conversions (PIL modes):
- L, 1, RGB, YCbCr, LAB, HSV, CMYK: Pillow's own conversion to RGB.
- LA, RGBA, PA, La, RGBa, and P/L/RGB with a transparency entry: composited on `background`
  (white by default), so transparent pixels never turn black.
- I;16* (16-bit grayscale) and I (32-bit integer): scaled, not clipped, from the
  full 16-bit range: value 40000 becomes round(40000 / 65535 * 255) = 156. An I
  image whose values leave 0..65535 is scaled by its own min..max instead.
- F (float, e.g. a float TIFF): values already in 0..1 are scaled by 255; any
  other range is scaled by the image's own min..max. NaN becomes 0.
- Animated images (GIF, APNG, WebP): the first frame.
- JPEG/TIFF/PNG/WebP with an EXIF orientation tag: turned upright (as ImageOps.exif_transpose turns them).

Every failure raises BadImage, whose message names the file and the reason;
`rgb_from_bytes` does all of this for an encoded image held in memory (an upload).
All the compressed data is decoded, so truncated files fail here and not later.
Images over MAX_PIXELS or MAX_ASPECT are refused from their header; JPEGs also
pass the marker walk of tlzoo.data.jpeg_structure.

`need` (tlzoo.data.decode_size) lets a large image come out smaller: a JPEG is
decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself (every coefficient is still
entropy-decoded, so damage is found as in a full decode), anything else is
reduced by a power of two after decoding; the result still meets the need.

Decoder warnings are not errors. Pillow warns about metadata it skips (EXIF
tags, an invalid APNG or MPO that falls back to its first image) and raises
for damaged pixel data; turning warnings into errors needs
warnings.catch_warnings, which swaps process-wide state and is not
thread-safe (the scan's threads left the process with every warning an error).
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from tlzoo.data.decode_size import SizeNeed, reduction
from tlzoo.data.decoded_once import active_store
from tlzoo.data.jpeg_structure import jpeg_damage
from tlzoo.errors import TlzooError
from tlzoo.runtime.interrupts import Interrupted

# Photo formats Pillow cannot decode. They are still listed as images, so that a class folder of iPhone HEIC
# photos or camera raw files is reported file by file with what to do, instead of passed over in silence.
UNDECODED_PHOTOS = {".heic": "HEIC", ".heif": "HEIF", ".dng": "camera raw (DNG)", ".cr2": "camera raw (CR2)",
                    ".cr3": "camera raw (CR3)", ".nef": "camera raw (NEF)", ".arw": "camera raw (ARW)",
                    ".orf": "camera raw (ORF)", ".rw2": "camera raw (RW2)", ".raf": "camera raw (RAF)"}
# suffixes tlzoo treats as images when it lists folders (.jfif and .jpe: JPEGs as some browsers save them)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".avif", ".tif", ".tiff",
                    ".ppm", ".pgm", ".pbm", *UNDECODED_PHOTOS)

Background = tuple[int, int, int]

# caps checked from the header, before decoding (see _check_shape)
MAX_PIXELS = 64_000_000
MAX_ASPECT = 50

_ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}
_SIXTEEN_BIT_MAX = 65535.0


class BadImage(TlzooError):
    """A file that cannot be used as an image; `reason` is short enough for a list."""

    def __init__(self, path: Path | str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}", "fix or remove the file, or set data.bad_files to 'skip'")

    def __reduce__(self):  # cross DataLoader worker boundaries with both fields intact
        return (BadImage, (self.path, self.reason))


def load_rgb(path: Path | str, background: Background = (255, 255, 255), need: SizeNeed | None = None) -> Image.Image:
    """Open, decode and convert one image to upright RGB, no smaller than `need` asks (see the module docstring)."""
    return decode_rgb(path, background, need)[0]


def decode_rgb(path: Path | str, background: Background = (255, 255, 255),
               need: SizeNeed | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """(upright RGB image, the upright (width, height) of the file at full size): load_rgb and the scan's check."""
    path = Path(path)
    store = active_store()
    kept = store.take(path, background, need) if store is not None else None
    if kept is not None:  # the scan decoded it at this scale for this run (tlzoo.data.decoded_once)
        return kept

    def opened() -> Image.Image:
        _require_regular_file(path)
        return Image.open(path)

    return _decode(path, opened, path.read_bytes, background, need, None)


def rgb_from_bytes(data: bytes, name: str, background: Background = (255, 255, 255),
                   need: SizeNeed | None = None) -> Image.Image:
    """load_rgb for an encoded image held in memory (an upload): the same caps, checks, reduction and
    conversion, so the result is what load_rgb gives for a file of these bytes; BadImage names it `name`."""
    return _decode(Path(name), lambda: Image.open(io.BytesIO(data)), lambda: data, background, need, len(data))[0]


def _decode(path: Path, opened, raw_bytes, background: Background, need: SizeNeed | None,
            size: int | None) -> tuple[Image.Image, tuple[int, int]]:
    # another library may have switched this on process-wide; truncated files must fail here
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with opened() as image:
            _check_shape(path, image.size)  # before decoding: the header alone tells
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            turn = _TRANSPOSE.get(image.getexif().get(_ORIENTATION, 1))
            full = _upright(image.size, turn)
            factor = reduction(need, *full)
            if factor > 1 and image.format in _DRAFTS:
                size_before = image.size
                image.draft(image.mode, _shrunk(size_before, factor))
                if image.size != size_before:
                    factor = 1  # libjpeg decodes at 1/factor
            image.load()
            if image.format in _DRAFTS and (damage := jpeg_damage(raw_bytes())):
                raise BadImage(path, f"corrupt JPEG data: {damage}")
            rgb = to_rgb(image, background, copy=False)
        if factor > 1:
            rgb = rgb.reduce(factor)
        return (rgb if turn is None else rgb.transpose(turn)), full
    except (BadImage, Interrupted):  # a Ctrl-C raised inside the decoder is not a damaged file
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder failure becomes one named error
        raise BadImage(path, describe_failure(path, exc, size)) from None


def rgb_from_memory(image: Image.Image, background: Background = (255, 255, 255), name: str = "image",
                    need: SizeNeed | None = None) -> Image.Image:
    """An image already in memory (a PIL image handed to predict): the caps of a file, then RGB, reduced for
    `need`; BadImage names it `name`. EXIF orientation is the caller's business, as for any decoded image."""
    if not isinstance(image, Image.Image):
        raise BadImage(name, f"not a PIL image ({type(image).__name__})")
    _check_shape(Path(name), image.size)
    try:
        rgb = to_rgb(image, background)
    except Exception as exc:  # noqa: BLE001 - a mode Pillow cannot convert
        raise BadImage(name, f"cannot convert to RGB ({type(exc).__name__}: {exc})") from None
    factor = reduction(need, *rgb.size)
    return rgb.reduce(factor) if factor > 1 else rgb


_DRAFTS = ("JPEG", "MPO")  # Pillow formats that decode at a reduced scale (MPO: a phone camera's JPEG)

# EXIF orientation -> the transpose that makes the image upright (ImageOps.exif_transpose's table)
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = {Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE,
                Image.Transpose.ROTATE_90}


def _upright(size: tuple[int, int], turn) -> tuple[int, int]:
    return (size[1], size[0]) if turn in _SWAPS_SIDES else size


def _shrunk(size: tuple[int, int], factor: int) -> tuple[int, int]:
    """The size to ask Pillow's JPEG draft for so that it picks exactly 1/factor (it picks the largest
    scale s in 8, 4, 2, 1 with s <= min(width // asked width, height // asked height))."""
    return max(1, size[0] // factor), max(1, size[1] // factor)


def _check_shape(path: Path, size: tuple[int, int]) -> None:
    """Refuse images whose pixels or aspect ratio would blow up decoding or resizing.

    A 1 x 60000 PNG is 257 bytes, but resizing its shorter side to 224 asks for
    224 x 13.4 million pixels. Within MAX_ASPECT, resizing the shorter side to s
    gives at most MAX_ASPECT * s^2 pixels.
    """
    width, height = size
    if width < 1 or height < 1:
        raise BadImage(path, f"image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise BadImage(path, f"image too large: {width}x{height} is {width * height / 1e6:.0f} Mpx, "
                             f"the cap is {MAX_PIXELS // 1_000_000} Mpx")
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT:
        raise BadImage(path, f"image too thin: {width}x{height} has aspect ratio {aspect:.0f}:1, the cap is "
                             f"{MAX_ASPECT}:1 (resizing it would need {aspect:.0f}x the pixels of a square image)")


def _require_regular_file(path: Path) -> None:
    """Open regular files only: opening a FIFO named x.jpg blocks until a writer comes, maybe forever."""
    mode = os.stat(path).st_mode  # follows symlinks; a missing file raises, described below
    if stat.S_ISDIR(mode):
        raise BadImage(path, "a directory, not an image file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise BadImage(path, f"not a regular file ({kind})")


def describe_failure(path: Path, exc: BaseException, size: int | None = None) -> str:
    """A short reason for a failed open/decode, for messages and skipped-file lists.

    `size`: the byte count of data decoded from memory (a file's own size is looked up otherwise).
    """
    if isinstance(exc, Image.DecompressionBombError):
        return f"decompression bomb refused ({exc})"
    if isinstance(exc, FileNotFoundError):
        return "missing file (or a broken symlink)" if path.is_symlink() else "missing file"
    if isinstance(exc, IsADirectoryError):
        return "a directory, not an image file"
    if isinstance(exc, PermissionError):
        return "unreadable file (permission denied)"
    if isinstance(exc, UnidentifiedImageError):
        empty = (_size(path) if size is None else size) == 0
        if empty:
            return "empty file (0 bytes)"
        return undecoded_photo(path) or "not an image (unknown format)"
    text = str(exc) or type(exc).__name__
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return f"truncated or corrupt image data ({text})"
    return f"cannot decode image ({type(exc).__name__}: {text})"


def undecoded_photo(path: Path) -> str | None:
    """The reason a file is refused when its name says it is a photo format Pillow cannot decode, else None."""
    photo = UNDECODED_PHOTOS.get(Path(path).suffix.lower())
    if photo is None:
        return None
    return (f"a {photo} photo, which tlzoo cannot decode: convert it to JPEG or PNG (for instance "
            f"magick mogrify -format jpg *{Path(path).suffix})")


def bad_without_opening(path: Path) -> str | None:
    """What the file's name and metadata alone show to be wrong with it (missing, empty, not a regular file, a
    format that cannot be decoded), or None; the file itself is not opened (a test split before its time)."""
    try:
        mode = os.stat(path)
    except FileNotFoundError:
        return "missing file"
    except OSError as exc:
        return f"unreadable file ({exc.strerror})"
    if stat.S_ISDIR(mode.st_mode):
        return "a directory, not an image file"
    if not stat.S_ISREG(mode.st_mode):
        return "not a regular file"
    if mode.st_size == 0:
        return "empty file (0 bytes)"
    return undecoded_photo(path)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def to_rgb(image: Image.Image, background: Background = (255, 255, 255), copy: bool = True) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB; an RGB image itself when `copy` is false."""
    mode = image.mode
    if mode in ("P", "L", "RGB") and "transparency" in image.info:  # a tRNS colour or palette entry
        image, mode = image.convert("RGBA"), "RGBA"
    if mode == "RGB":
        return image.copy() if copy else image
    if mode.startswith("I;16") or mode == "I":
        return Image.fromarray(_scale_integers(np.asarray(image), mode)).convert("RGB")
    if mode == "F":
        return Image.fromarray(_scale_floats(np.asarray(image, dtype=np.float64))).convert("RGB")
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def _scale_integers(values: np.ndarray, mode: str) -> np.ndarray:
    values = values.astype(np.float64)
    low, high = 0.0, _SIXTEEN_BIT_MAX
    if mode == "I" and values.size and (values.min() < 0 or values.max() > _SIXTEEN_BIT_MAX):
        low, high = float(values.min()), float(values.max())
    return _to_uint8(values, low, high)


def _scale_floats(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    if not values.size:
        return values.astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0
    return _to_uint8(values, low, high)


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) / (high - low) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
