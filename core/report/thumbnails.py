"""Small JPEG thumbnails as data: URIs, so the report is one self-contained file."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from tlzoo.data.decode_size import LongerSide
from tlzoo.data.images import load_rgb
from tlzoo.errors import TlzooError

THUMBNAIL_SIZE = 160
JPEG_QUALITY = 80


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumbnail_uri(path: Path, size: int = THUMBNAIL_SIZE) -> str | None:
    """A JPEG data: URI at most `size` pixels a side; None when the image can no longer be read."""
    try:
        image = load_rgb(Path(path), need=LongerSide(size))  # a phone photo decodes at 1/8 for a thumbnail
    except (TlzooError, OSError, ValueError):  # gone or damaged since the run: the report renders without it
        return None
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return data_uri(buffer.getvalue(), "image/jpeg")
