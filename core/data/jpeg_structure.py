"""A walk over a JPEG's markers that finds damage the decoder passes over.

Pillow's JPEG decoder silences libjpeg's warnings ("Corrupt JPEG data: ..."),
so a file with overwritten bytes often decodes without a sound. Inside the
compressed data of a scan a 0xFF byte may only be followed by 0x00 (a stuffed
byte), another 0xFF (fill), the next restart marker RST0..RST7 in order, or a
marker that may come between scans (progressive files). Anything else, a segment
that runs past the end, or no end marker, means the bytes are damaged.

This catches damage that hits marker bytes; garbage that happens to look like
valid compressed data still decodes to wrong pixels, and no cheap check can see it.
"""

from __future__ import annotations

SOI, EOI, SOS = 0xD8, 0xD9, 0xDA
_RESTARTS = range(0xD0, 0xD8)
# tables, restart interval, comments and APPn may sit between the scans of a progressive file
_BETWEEN_SCANS = {0xC4, 0xCC, 0xDB, 0xDD, SOS, 0xFE, *range(0xE0, 0xF0)}


def jpeg_damage(data: bytes) -> str | None:
    """Why the JPEG bytes `data` are damaged, or None when their structure holds (or it is no JPEG)."""
    if data[:2] != bytes((0xFF, SOI)):
        return None
    position = 2
    while True:
        marker, position = _next_marker(data, position)
        if marker is None:
            return "no end-of-image marker (truncated)"
        if marker == EOI:
            return None
        if position + 2 > len(data):
            return f"segment 0xFF{marker:02X} runs past the end of the file"
        length = int.from_bytes(data[position:position + 2], "big")
        if length < 2 or position + length > len(data):
            return f"segment 0xFF{marker:02X} at byte {position - 2} runs past the end of the file"
        position += length
        if marker == SOS:
            problem, position = _skip_scan(data, position)
            if problem:
                return problem


def _next_marker(data: bytes, position: int) -> tuple[int | None, int]:
    if position >= len(data) or data[position] != 0xFF:
        return None, position
    while position < len(data) and data[position] == 0xFF:
        position += 1
    if position >= len(data):
        return None, position
    return data[position], position + 1


def _skip_scan(data: bytes, position: int) -> tuple[str | None, int]:
    """Walk the compressed data of one scan; return a problem, or the position of the marker after it."""
    restart = 0
    while True:
        found = data.find(b"\xff", position)
        if found < 0 or found + 1 >= len(data):
            return "compressed data ends without an end-of-image marker (truncated)", position
        following = data[found + 1]
        if following in (0x00, 0xFF):
            position = found + (2 if following == 0x00 else 1)
        elif following in _RESTARTS:
            if following - 0xD0 != restart % 8:
                return f"restart marker out of order at byte {found} (corrupt compressed data)", position
            restart += 1
            position = found + 2
        elif following == EOI or following in _BETWEEN_SCANS:
            return None, found
        else:
            return f"invalid marker 0xFF{following:02X} inside the compressed data at byte {found}", position
