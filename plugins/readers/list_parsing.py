"""Shared parsing for list readers (txt_list, csv): text lines, labels, duplicates, each problem by file:line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from tlzoo.errors import TlzooError
from tlzoo.data.samples import Problem, Sample

LabelMode = Literal["auto", "names", "indices"]


def read_text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) for each line; CRLF or LF, a UTF-8 byte-order mark is dropped."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlzooError(f"cannot read {path}: {exc.strerror or exc}", "check the file and its permissions") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TlzooError(f"{path}:{line}: not UTF-8 text (byte {exc.start})", "save the list as UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [(number, line.rstrip("\r")) for number, line in enumerate(lines, start=1)]


def parse_index(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


class ListEntries:
    """The entries of one list file: resolved paths, labels, and a Problem for each bad line."""

    def __init__(self, image_root: Path | None = None, seen_in: "ListEntries | None" = None):
        self.image_root = image_root
        self.seen_in = seen_in  # the training entries, when this is the validation list
        self.problems: list[Problem] = []
        self._rows: list[tuple[str, Path, str, LabelMode]] = []
        self._first: dict[Path, tuple[str, str]] = {}  # path -> (origin, label text) of its first line

    def problem(self, origin: str, reason: str) -> None:
        self.problems.append(Problem(origin, reason))

    def add(self, origin: str, path_text: str, label: str, base: Path, labels: LabelMode) -> None:
        if not path_text:
            self.problem(origin, "empty image path")
            return
        if not label:
            self.problem(origin, "empty label")
            return
        if labels == "indices" and not self._index_ok(origin, label):
            return
        path = Path(path_text).expanduser()
        key = Path(os.path.normpath(path if path.is_absolute() else base / path))  # one spelling per file
        if key in self._first:
            first_origin, first_label = self._first[key]
            same = "duplicate" if first_label == label else f"listed again with label {label!r} ({first_label!r} first)"
            self.problem(origin, f"{same} of {first_origin}; this line is ignored")
            return
        if self.seen_in is not None and key in self.seen_in._first:
            self.problem(origin, f"also in the training list at {self.seen_in._first[key][0]}; "
                                 "an image must not be in both splits, this line is ignored")
            return
        self._first[key] = (origin, label)
        self._rows.append((origin, key, label, labels))

    def _index_ok(self, origin: str, label: str) -> bool:
        index = parse_index(label)
        if index is None:
            self.problem(origin, f"label {label!r} is not an integer class index")
            return False
        if index < 0:
            self.problem(origin, f"label {index} is negative; class indices start at 0")
            return False
        return True

    def labels_are_indices(self) -> bool:
        """True when every 'auto' label of this list is an integer."""
        return all(parse_index(label) is not None for _, _, label, mode in self._rows if mode == "auto")

    def finish(self, auto_indices: bool) -> list[Sample]:
        """Samples in list order; 'auto' labels become indices when `auto_indices` (decided over all lists)."""
        samples = []
        for origin, path, label, mode in self._rows:
            as_index = mode == "indices" or (mode == "auto" and auto_indices)
            if as_index and mode == "auto" and not self._index_ok(origin, label):
                continue
            samples.append(Sample(path, parse_index(label) if as_index else label, origin))
        self.problems.sort(key=lambda problem: int(problem.origin.rsplit(":", 1)[1]))  # back in line order
        return samples
