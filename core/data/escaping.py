"""File names in line-based outputs (skipped.txt, predict's table, stderr notes): one name, one line.

A file name may hold any character but `/` and NUL, a newline included, which
would split its line in two. `line_safe` escapes names as a Python string
literal would, without the quotes: a backslash becomes `\\\\`; newline, carriage
return and tab become `\\n`, `\\r`, `\\t`; other control and invisible format
characters (ESC, U+202E, line separators) become `\\xNN` or `\\uNNNN`; a byte
that is not UTF-8 (Python's surrogate escape) becomes `\\xNN`, its value. Every
other character, accented and CJK letters included, is left as it is.
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPED_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # controls, format, surrogates, line/paragraph separators


def line_safe(text: object) -> str:
    """`text` (a path or a string) with the characters that could break or forge a line escaped."""
    text = str(text)
    if text.isprintable() and "\\" not in text:
        return text  # the common case: nothing to do
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    if unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
