"""What a dataset reader returns. Readers list files; tlzoo maps classes and checks images.

A dataset-reader component's `build(options, base_dir)` returns a ReaderOutput;
`base_dir` is the spec file's folder, against which relative paths resolve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str | int  # a class name, or a class index when the source has only numbers
    origin: str  # where it was listed, for messages: "train.txt:12" or the file path


@dataclass(frozen=True)
class Problem:
    """An input that cannot be used: a bad list line or a bad image file."""

    origin: str  # "list.txt:7" or the file path
    reason: str


@dataclass
class ReaderOutput:
    train: list[Sample]
    val: list[Sample]
    classes: list[str] | None = None  # the source's own class order, when it defines one
    problems: list[Problem] = field(default_factory=list)  # lines that could not be read
    # a held-out split scored once with the best model; None when the source has none
    test: list[Sample] | None = None
    notes: list[str] = field(default_factory=list)  # facts the user should hear, logged by the run
