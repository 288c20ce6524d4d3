"""Class names and each sample's class index, from a reader's output.

Class indices come from the training split: the reader's own `classes` when it
gives them (a classes file, the class folders), else the natural sort of the
training label names, else 0..max for integer labels. Validation and test
labels are mapped by name; every label that names no class is reported at once.
"""

from __future__ import annotations

import difflib

from tlzoo.registry.catalog import natural_key

from tlzoo.errors import TlzooError
from tlzoo.data.problem_list import listed
from tlzoo.data.samples import ReaderOutput, Sample


def map_classes(output: ReaderOutput) -> tuple[list[str], list[tuple[Sample, int]], list[tuple[Sample, int]]]:
    """Class names and each training and validation sample's class index (see map_splits)."""
    classes, splits = map_splits(output)
    return classes, splits["train"], splits["val"]


def map_splits(output: ReaderOutput) -> tuple[list[str], dict[str, list[tuple[Sample, int]]]]:
    """Class names and each sample's class index, by split ("test" only when the reader gives one);
    raises TlzooError listing every bad label."""
    errors: list[str] = []
    if output.classes is not None:
        classes = list(output.classes)
    elif any(isinstance(sample.label, str) for sample in output.train):
        classes = sorted({str(sample.label) for sample in output.train}, key=natural_key)
    else:
        top = max((sample.label for sample in output.train), default=-1)
        classes = [str(index) for index in range(top + 1)]
    by_name = {name: index for index, name in enumerate(classes)}
    if len(by_name) != len(classes):
        twice = sorted({name for name in classes if classes.count(name) > 1})
        raise TlzooError(f"class name(s) listed twice: {', '.join(twice)}", "give each class one name")

    def index_of(sample: Sample, split: str) -> int | None:
        label = sample.label
        if isinstance(label, int) and not isinstance(label, bool):
            if 0 <= label < len(classes):
                return label
            errors.append(f"{sample.origin}: label {label} is out of range: there are {len(classes)} classes "
                          f"(0..{len(classes) - 1})")
            return None
        if str(label) in by_name:
            return by_name[str(label)]
        where = "the class list" if output.classes is not None else "the training split"
        near = nearest_name(str(label), classes)
        errors.append(f"{sample.origin}: class {label!r} in {split} is not in {where}"
                      + (f" (did you mean {near!r}?)" if near else ""))
        return None

    named = [("train", output.train), ("val", output.val)] + ([("test", output.test)] if output.test is not None else [])
    mapped = {split: [(s, i) for s in samples if (i := index_of(s, split)) is not None] for split, samples in named}
    if errors:
        raise TlzooError(f"{len(errors)} label problem(s):\n" + listed(errors),
                         "fix the labels, or the class list, so that every label names a training class")
    return classes, mapped


def nearest_name(label: str, classes: list[str]) -> str | None:
    """The class a mistyped label most likely means: the same name but for case, spaces or separators, else one
    that differs by a letter or two; None when nothing is close."""
    folded = lambda name: "".join(ch for ch in name.casefold() if ch.isalnum())  # noqa: E731
    same = [name for name in classes if folded(name) == folded(label)]
    if same:
        return same[0]
    by_folded = {folded(name): name for name in reversed(classes)}  # the first class wins a tie
    close = difflib.get_close_matches(folded(label), list(by_folded), n=1, cutoff=0.85)
    return by_folded[close[0]] if close else None
