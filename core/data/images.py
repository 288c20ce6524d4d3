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
- JPEG/TIFF with an EXIF orientation tag: rotated upright (ImageOps.exif_transpose).

`decode_rgb` does the same for an image held in memory (an upload). Every
failure raises BadImage, whose message names the file and the reason.
The image is decoded fully, so truncated files fail here and not later. Images
over MAX_PIXELS or MAX_ASPECT are refused from their header; a decoder warning
is a failure; JPEGs also pass the marker walk of tlzoo.data.jpeg_structure.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from tlzoo.data.jpeg_structure import jpeg_damage
from tlzoo.errors import TlzooError

# suffixes tlzoo treats as images when it lists folders
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")

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


def load_rgb(path: Path | str, background: Background = (255, 255, 255)) -> Image.Image:
    """Open, fully decode and convert one image to upright RGB (see the module docstring)."""
    path = Path(path)

    def opened() -> Image.Image:
        _require_regular_file(path)
        return Image.open(path)

    return _decode(path, opened, path.read_bytes, background, None)


def decode_rgb(data: bytes, name: str, background: Background = (255, 255, 255)) -> Image.Image:
    """load_rgb for an image held in memory (an upload): the same checks, caps and conversions.

    `name` stands for the path in BadImage's message.
    """
    return _decode(Path(name), lambda: Image.open(io.BytesIO(data)), lambda: data, background, len(data))


def _decode(path: Path, opened, raw_bytes, background: Background, size: int | None) -> Image.Image:
    # another library may have switched this on process-wide; truncated files must fail here
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    caught: list[Warning] = []
    try:
        with _decoder_warnings.recording(caught):
            with opened() as image:
                _check_shape(path, image.size)  # before decoding: the header alone tells
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                image.load()
                if image.format == "JPEG" and (damage := jpeg_damage(raw_bytes())):
                    raise BadImage(path, f"corrupt JPEG data: {damage}")
                upright = ImageOps.exif_transpose(image)
                rgb = to_rgb(upright, background)
        if caught:
            raise caught[0]  # a decoder's warning means damaged data: the file is bad
        return rgb
    except BadImage:
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder failure becomes one named error
        first = caught[0] if caught else exc  # a warning before a failure is what went wrong first
        raise BadImage(path, describe_failure(path, first, size)) from None


class _DecoderWarnings:
    """The warnings each thread's decode raises, kept for that thread.

    warnings.catch_warnings swaps process-wide state and is not thread-safe: the
    scan's threads, each entering and leaving it, left "every warning is an
    error" installed for the rest of the process. Here the first decode to start
    installs one filter and hook, the last to finish restores what was there,
    and a warning goes to the decoding thread that raised it; another thread's
    warnings are shown as usual (every time, while a decode runs).
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.saved: tuple | None = None
        self.local = threading.local()

    @contextlib.contextmanager
    def recording(self, caught: list):
        """Warnings this thread raises inside go to `caught`."""
        with self.lock:
            if self.active == 0:
                self.saved = (warnings.filters, warnings.showwarning)
                warnings.filters = list(warnings.filters)
                warnings.simplefilter("always")  # every warning reaches the hook, none is deduplicated away
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the hard limit still applies
                warnings.showwarning = self.show
            self.active += 1
        self.local.caught = caught
        try:
            yield
        finally:
            self.local.caught = None
            with self.lock:
                self.active -= 1
                if self.active == 0:
                    warnings.filters, warnings.showwarning = self.saved
                    warnings._filters_mutated()  # noqa: SLF001 - what catch_warnings does on leaving

    def show(self, message, category, filename, lineno, file=None, line=None):
        caught = getattr(self.local, "caught", None)
        if caught is not None:
            caught.append(message if isinstance(message, Warning) else category(message))
        else:
            self.saved[1](message, category, filename, lineno, file, line)


_decoder_warnings = _DecoderWarnings()


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

    `size`: the byte count of data decoded from memory (the file's size is looked up otherwise).
    """
    if isinstance(exc, Warning):
        return f"decoder warning, damaged image data ({type(exc).__name__}: {exc})"
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
        return "empty file (0 bytes)" if empty else "not an image (unknown format)"
    text = str(exc) or type(exc).__name__
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return f"truncated or corrupt image data ({text})"
    return f"cannot decode image ({type(exc).__name__}: {text})"


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def to_rgb(image: Image.Image, background: Background = (255, 255, 255)) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB."""
    mode = image.mode
    if mode in ("P", "L", "RGB") and "transparency" in image.info:  # a tRNS colour or palette entry
        image, mode = image.convert("RGBA"), "RGBA"
    if mode == "RGB":
        return image.copy()
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
