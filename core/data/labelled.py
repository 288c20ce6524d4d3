"""From a reader's file lists to checked, labelled datasets.

The engine's entry points:

    load_labelled(resolved) -> LabelledData
        Runs the spec's reader (`resolved.reader.build(resolved.base_dir)`), maps
        classes, scans every image and applies data.bad_files, max_bad_fraction
        and allow_empty_classes. Raises TlzooError for what the user must fix.

    labelled_from(output, bad_files="skip", max_bad_fraction=0.01,
                  allow_empty_classes=False, tolerated_bad_files=5) -> LabelledData
        The same from a ReaderOutput already in hand (tests, other tools).

Its parts live beside it: class mapping in tlzoo.data.class_mapping, the scan in
tlzoo.data.scan, the bad-file policy in tlzoo.data.bad_files, skipped.txt in
tlzoo.data.skipped, the Dataset in tlzoo.data.dataset (its errors in
tlzoo.data.sample_errors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tlzoo.errors import TlzooError
from tlzoo.data.bad_files import MAX_BAD_FRACTION, TOLERATED_BAD_FILES, check_bad_files
from tlzoo.data.class_mapping import map_splits
from tlzoo.data.dataset import Item
from tlzoo.data.problem_list import listed
from tlzoo.data.samples import Problem, ReaderOutput, Sample
from tlzoo.data.scan import ImageSize, scan_images

__all__ = ["LabelledData", "load_labelled", "labelled_from"]


@dataclass
class LabelledData:
    classes: list[str]
    train: list[Item]
    val: list[Item]
    skipped: list[Problem]
    sizes: dict[Path, ImageSize] = field(default_factory=dict)  # (width, height) of each good image, decoded
    test: list[Item] | None = None  # the held-out split, when the reader gives one
    notes: list[str] = field(default_factory=list)  # the reader's notes, logged by the run
    hashes: dict[Path, tuple[int, ...]] = field(default_factory=dict)  # perceptual hashes the scan computed


def load_labelled(resolved) -> LabelledData:
    """Read, map and scan the spec's data (see the module docstring)."""
    data = resolved.spec.data
    output = resolved.reader.build(resolved.base_dir)
    if not isinstance(output, ReaderOutput):
        raise TlzooError(f"dataset reader {resolved.reader.name!r} returned {type(output).__name__}, "
                         "not a ReaderOutput", "this is a bug in the reader plugin; report it to its author")
    return labelled_from(output, data.bad_files, data.max_bad_fraction, data.allow_empty_classes,
                         data.tolerated_bad_files)


def labelled_from(output: ReaderOutput, bad_files: str = "skip", max_bad_fraction: float = MAX_BAD_FRACTION,
                  allow_empty_classes: bool = False, tolerated_bad_files: int = TOLERATED_BAD_FILES) -> LabelledData:
    classes, splits = map_splits(output)
    train, val, test = splits["train"], splits["val"], splits.get("test")
    samples = train + val + (test or [])
    _check_no_leaks(splits)
    results = scan_images(sorted({sample.path for sample, _ in samples}))
    bad_images = [Problem(_where(sample), results[sample.path].problem)
                  for sample, _ in samples if results[sample.path].problem]
    problems = list(output.problems) + bad_images
    total = len(samples) + len(output.problems)
    if problems:
        check_bad_files(problems, total, bad_files, max_bad_fraction, tolerated_bad_files)
    good = {path for path, result in results.items() if not result.problem}
    train_items = [(sample.path, index) for sample, index in train if sample.path in good]
    val_items = [(sample.path, index) for sample, index in val if sample.path in good]
    _check_counts(classes, train_items, val_items, allow_empty_classes, skipped=bool(bad_images))
    sizes = {path: results[path].size for path in good}
    test_items = None if test is None else [(sample.path, index) for sample, index in test if sample.path in good]
    if test is not None and not test_items:
        raise TlzooError("the test split has no usable images", "check data.reader's test option and the files")
    hashes = {path: results[path].hashes for path in good if results[path].hashes is not None}
    return LabelledData(classes, train_items, val_items, problems, sizes, test_items, list(output.notes), hashes)


def _check_no_leaks(splits: dict[str, list[tuple[Sample, int]]]) -> None:
    """Refuse an image that two splits share (by resolved path: symlinks and ../ spellings count).

    Two splits made of exactly the same images are one folder or list named twice on
    purpose (`tlzoo evaluate --data` reads a folder as both): not a leak.
    """
    resolved = {split: {_resolved(sample.path) for sample, _ in samples} for split, samples in splits.items()}
    first: dict[Path, tuple[str, Sample]] = {}
    leaks = []
    for split, samples in splits.items():
        for sample, _ in samples:
            key = _resolved(sample.path)
            if key in first and first[key][0] != split and resolved[first[key][0]] != resolved[split]:
                other, where = first[key]
                leaks.append(f"{_where(sample)}: in {split}, and in {other} as {_where(where)}")
            first.setdefault(key, (split, sample))
    if leaks:
        raise TlzooError(f"{len(leaks)} image(s) appear in more than one split, so the evaluation would see "
                         "training images:\n" + listed(leaks),
                         "give every image to one split only (check symlinks and duplicated list lines)")


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: the scan reports the file itself
        return path


def _where(sample: Sample) -> str:
    """'train.txt:7 (imgs/a.jpg)' for list entries, the path itself for files found in folders."""
    return str(sample.path) if sample.origin == str(sample.path) else f"{sample.origin} ({sample.path})"


class EmptyClasses(TlzooError):
    """Classes left without a training image; `names`, and whether bad files skipped took their last ones."""

    def __init__(self, message: str, hint: str, names: list[str], after_skipping: bool):
        super().__init__(message, hint)
        self.names, self.after_skipping = names, after_skipping


def _check_counts(classes, train: list[Item], val: list[Item], allow_empty: bool, skipped: bool) -> None:
    if not train:
        raise TlzooError("the training split has no usable images", "check data.reader's options and the files")
    if not val:
        raise TlzooError("the validation split has no usable images",
                         "point data.reader at a validation folder or list, or set its val_split")
    counts = [0] * len(classes)
    for _, index in train:
        counts[index] += 1
    empty = [name for name, count in zip(classes, counts) if count == 0]
    if empty and not allow_empty:
        why = " (after skipping bad files)" if skipped else ""
        raise EmptyClasses(f"class(es) with no training images{why}: {', '.join(empty)}",
                           "add images, remove the class, or set data.allow_empty_classes to true", empty, skipped)
