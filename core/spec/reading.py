"""Reading a spec file: a bounded read of UTF-8 JSON, then the --set overrides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tlzoo.errors import SpecError
from tlzoo.spec.problems import shorten

MAX_SPEC_BYTES = 1 << 20  # a spec is a few KB; the cap keeps /dev/zero or a stray image from filling memory


def read_spec_text(path: Path, source: str) -> str:
    """The spec file's text: a regular UTF-8 file of at most MAX_SPEC_BYTES, read with a bounded read."""
    def refuse(message: str, hint: str | None = None):
        raise SpecError([("", message + (f"\n    HINT: {hint}" if hint else ""))], source)

    try:
        if path.exists() and not path.is_file():
            refuse(f"spec file {source} is {'a folder' if path.is_dir() else 'not a regular file'}",
                   "pass a JSON file")
        with open(path, "rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        refuse(f"spec file {source} does not exist")
    except OSError as exc:
        refuse(f"cannot read spec file {source}: {exc.strerror}")
    if len(data) > MAX_SPEC_BYTES:
        refuse(f"spec file {source} is larger than {MAX_SPEC_BYTES // 1024} KiB; a run spec is a small JSON file")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        refuse(f"spec file {source} is UTF-16 text", "save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        refuse(f"spec file {source} is not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}",
               "save it as UTF-8 (Latin-1 and other encodings are not read)")


def parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError([("", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")], source) from None
    except RecursionError:
        raise SpecError([("", "invalid spec: its JSON is nested too deeply")], source) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise SpecError([("", f"invalid JSON: {shorten(str(exc), 200)}")], source) from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.epochs=5' -> (['train', 'epochs'], 5); values are JSON, else strings."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ValueError(f"--set {shorten(item)!r}: write KEY=VALUE with a dotted key, e.g. --set train.epochs=5")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        value = raw
    return key.strip().split("."), value


# fields that may be written as a bare name, so --set can reach into them
SHORTHAND_FIELDS = ("backbone", "reader", "strategy", "optimizer", "scheduler")


def apply_overrides(raw: dict, overrides: list[str], source: str) -> dict:
    problems = []
    for item in overrides:
        try:
            keys, value = parse_override(item)
        except ValueError as exc:
            problems.append(("--set", str(exc)))
            continue
        target = raw
        for key in keys[:-1]:
            current = target.get(key)
            if isinstance(current, str) and key in SHORTHAND_FIELDS:
                current = {"name": current}  # let --set reach into the shorthand
            if current is None:
                current = {}
            if not isinstance(current, dict):
                problems.append((f"--set {shorten(item)}", f"cannot go inside {key!r}, which is not an object"))
                break
            target[key] = current
            target = current
        else:
            target[keys[-1]] = value
    if problems:
        raise SpecError(problems, source)
    return raw


def load_raw(path: str | Path, overrides: list[str] = ()) -> Any:
    """The spec file's JSON with the --set overrides applied."""
    source = str(path)
    raw = parse_json(read_spec_text(Path(path), source), source)
    if isinstance(raw, dict):
        raw = apply_overrides(raw, list(overrides), source)
    return raw
