"""From a reader's file lists to checked, labelled datasets.

The engine's entry points:

    load_labelled(resolved) -> LabelledData
        Runs the spec's reader (`resolved.reader.build(resolved.base_dir)`), maps
        classes, scans every image and applies data.bad_files, max_bad_fraction
        and allow_empty_classes. Raises TlzooError for what the user must fix.

    labelled_from(output, bad_files="skip", max_bad_fraction=0.01,
                  allow_empty_classes=False) -> LabelledData
        The same from a ReaderOutput already in hand (tests, other tools).

    ImageDataset(items, transform, background=(255, 255, 255))
        A torch Dataset of (path, class index) pairs; item i is (tensor, index).
        A file that fails raises SampleError naming it, also from a DataLoader worker.

    write_skipped(problems, path)
        The skipped inputs and their reasons, one a line (names escaped), for the run directory;
        nothing is written when nothing was skipped.

Class indices come from the training split: the reader's own `classes` when it
gives them (a classes file, the class folders), else the natural sort of the
training label names, else 0..max for integer labels. Validation labels are
mapped by name. Scanning lives in tlzoo.data.scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset

from tlzoo.registry.catalog import natural_key

from tlzoo.errors import TlzooError
from tlzoo.data.escaping import line_safe
from tlzoo.data.images import Background, BadImage, load_rgb
from tlzoo.data.samples import Problem, ReaderOutput, Sample
from tlzoo.data.scan import ImageSize, scan_images

__all__ = ["LabelledData", "load_labelled", "labelled_from", "map_classes", "ImageDataset", "SampleError",
           "write_skipped"]

Item = tuple[Path, int]
SHOWN = 10  # problems listed in an error message; the rest are counted


@dataclass
class LabelledData:
    classes: list[str]
    train: list[Item]
    val: list[Item]
    skipped: list[Problem]
    sizes: dict[Path, ImageSize] = field(default_factory=dict)  # (width, height) of each good image, decoded
    test: list[Item] | None = None  # the held-out split, when the reader gives one
    notes: list[str] = field(default_factory=list)  # the reader's notes, logged by the run


def load_labelled(resolved) -> LabelledData:
    """Read, map and scan the spec's data (see the module docstring)."""
    data = resolved.spec.data
    output = resolved.reader.build(resolved.base_dir)
    if not isinstance(output, ReaderOutput):
        raise TlzooError(f"dataset reader {resolved.reader.name!r} returned {type(output).__name__}, "
                         "not a ReaderOutput", "this is a bug in the reader plugin; report it to its author")
    return labelled_from(output, data.bad_files, data.max_bad_fraction, data.allow_empty_classes)


def labelled_from(output: ReaderOutput, bad_files: str = "skip", max_bad_fraction: float = 0.01,
                  allow_empty_classes: bool = False) -> LabelledData:
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
        _check_bad(problems, total, bad_files, max_bad_fraction)
    good = {path for path, result in results.items() if not result.problem}
    train_items = [(sample.path, index) for sample, index in train if sample.path in good]
    val_items = [(sample.path, index) for sample, index in val if sample.path in good]
    _check_counts(classes, train_items, val_items, allow_empty_classes, skipped=bool(bad_images))
    sizes = {path: results[path].size for path in good}
    test_items = None if test is None else [(sample.path, index) for sample, index in test if sample.path in good]
    if test is not None and not test_items:
        raise TlzooError("the test split has no usable images", "check data.reader's test option and the files")
    return LabelledData(classes, train_items, val_items, problems, sizes, test_items, list(output.notes))


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
                         "training images:\n" + _listing(leaks),
                         "give every image to one split only (check symlinks and duplicated list lines)")


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: the scan reports the file itself
        return path


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
        errors.append(f"{sample.origin}: class {label!r} in {split} is not in {where}")
        return None

    named = [("train", output.train), ("val", output.val)] + ([("test", output.test)] if output.test is not None else [])
    mapped = {split: [(s, i) for s in samples if (i := index_of(s, split)) is not None] for split, samples in named}
    if errors:
        raise TlzooError(f"{len(errors)} label problem(s):\n" + _listing(errors),
                         "fix the labels, or the class list, so that every label names a training class")
    return classes, mapped


def _where(sample: Sample) -> str:
    """'train.txt:7 (imgs/a.jpg)' for list entries, the path itself for files found in folders."""
    return str(sample.path) if sample.origin == str(sample.path) else f"{sample.origin} ({sample.path})"


def _check_bad(problems: list[Problem], total: int, bad_files: str, max_bad_fraction: float) -> None:
    lines = [f"{problem.origin}: {problem.reason}" for problem in problems]
    if bad_files == "error":
        raise TlzooError(f"{len(problems)} bad input(s) found before training (data.bad_files is 'error'):\n"
                         + _listing(lines), "fix or remove them, or set data.bad_files to 'skip'")
    fraction = len(problems) / max(total, 1)
    if fraction > max_bad_fraction:
        raise TlzooError(
            f"{len(problems)} of {total} inputs ({fraction:.1%}) are bad, more than data.max_bad_fraction "
            f"({max_bad_fraction:.1%}); training did not start:\n" + _listing(lines),
            "fix or remove the files, or raise data.max_bad_fraction if skipping them is fine")


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
        raise TlzooError(f"class(es) with no training images{why}: {', '.join(empty)}",
                         "add images, remove the class, or set data.allow_empty_classes to true")


def _listing(lines: list[str]) -> str:
    shown = [f"  {line}" for line in lines[:SHOWN]]
    if len(lines) > SHOWN:
        shown.append(f"  ... and {len(lines) - SHOWN} more")
    return "\n".join(shown)


def write_skipped(problems: list[Problem], path: Path) -> bool:
    """Write one 'origin<TAB>reason' line per skipped input (a header line first), only when there is one.

    Names are escaped (tlzoo.data.escaping.line_safe), so a newline or tab in a file name cannot split or
    forge a line. Returns whether the file was written.
    """
    if not problems:
        return False
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {len(problems)} input(s) skipped before training: origin<TAB>reason (names escaped as in "
             "Python strings)"]
    lines += [f"{line_safe(problem.origin)}\t{line_safe(problem.reason)}" for problem in problems]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return True


class SampleError(TlzooError):
    """A sample that failed to load or transform; the message starts with its path."""

    def __init__(self, message: str, hint: str | None = None):
        if message.startswith("Caught SampleError"):
            message = _from_worker(message)  # DataLoader rebuilds worker errors from their traceback text
        super().__init__(message, hint or "fix or remove the file; 'data.bad_files' only covers files that "
                                          "were bad when the run started")


def _from_worker(text: str) -> str:
    marker = "SampleError: "
    tail = text[text.rfind(marker) + len(marker):] if marker in text else text
    return tail.split("\n  HINT:")[0].strip() + " (in a DataLoader worker)"


class ImageDataset(Dataset):
    """(path, class index) pairs -> (transformed tensor, class index)."""

    def __init__(self, items: list[Item], transform: Callable, background: Background = (255, 255, 255)):
        self.items = list(items)
        self.transform = transform
        self.background = tuple(background)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        try:
            image = load_rgb(path, self.background)
        except BadImage as exc:
            raise SampleError(f"{path}: {exc.reason}") from None
        try:
            return self.transform(image), label
        except MemoryError:  # the transform's sizes, not the file, are at fault (augment sizes are capped)
            raise SampleError(f"{path}: transform ran out of memory on a {image.width}x{image.height} image",
                              "lower the sizes in data.augment; the file itself decoded fine") from None
        except Exception as exc:  # noqa: BLE001 - name the file whatever the transform raised
            raise SampleError(f"{path}: transform failed: {type(exc).__name__}: {exc}") from exc
