"""The built-in dataset readers: imagefolder, txt_list and csv.

A reader only lists files and labels (tlzoo.data.samples.ReaderOutput);
tlzoo.data.labelled maps classes and checks every image. Paths in options are
relative to the spec file's folder; paths inside lists are relative to the list.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tlzoo.errors import TlzooError
from tlzoo.data.images import IMAGE_EXTENSIONS
from tlzoo.data.samples import Problem, ReaderOutput, Sample
from tlzoo.registry import Component, hookimpl, natural_key

from tlzoo.plugins.readers.list_parsing import ListEntries, parse_index, read_text_lines
from tlzoo.spec.problems import shorten

FIELD = "data.reader.options"


def option_path(base_dir: Path, value: str, field: str, kind: str = "folder",
                base_name: str = "the spec file's folder") -> Path:
    """`value` resolved against `base_dir` (`base_name` says what that folder is, for the hint)."""
    path = Path(value).expanduser()
    path = Path(os.path.normpath(path if path.is_absolute() else Path(base_dir) / path))
    exists = path.is_dir() if kind == "folder" else path.is_file()
    if not exists:
        raise TlzooError(f"{FIELD}.{field}: {kind} {path} does not exist",
                         f"fix the path; relative paths start from {base_name} ({base_dir})")
    return path


def hidden(name: str) -> bool:
    return name.startswith(".")


# ---------------------------------------------------------------- imagefolder

class ImageFolderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root: str = Field(..., description="folder holding the split folders")
    train: str = Field("train", description="training folder inside root, one sub-folder per class; '.' is "
                                            "root itself (the default when val_split is set, root holds the "
                                            "class folders and has no 'train' folder)")
    val: str = Field("val", description="validation folder inside root; it picks the best epoch (or leave it "
                                        "out and set val_split)")
    test: str | None = Field(None, description="held-out test folder inside root, scored once with the best "
                                               "model at the end (e.g. 'test')")
    val_split: float | None = Field(None, gt=0.0, lt=1.0,
                                    description="take this fraction of each training class as validation "
                                                "instead of a val folder (stratified, seeded)")
    seed: int = Field(0, description="seed of the val_split draw")
    extensions: list[str] = Field(list(IMAGE_EXTENSIONS), description="file suffixes read as images")

    @model_validator(mode="after")
    def _one_val_source(self):
        if self.val_split is not None and "val" in self.model_fields_set:
            raise ValueError("give either 'val' (a folder) or 'val_split' (a fraction), not both")
        return self


def list_class_folder(folder: Path, extensions: set[str]) -> list[Path]:
    """Image-named entries below a class folder, recursively, hidden names skipped, natural order.

    Entries are kept whatever they are (a broken symlink, a directory named x.jpg)
    so the scan reports them instead of losing them silently.
    """
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if hidden(entry.name):
            continue
        if entry.suffix.lower() in extensions:
            found.append(entry)
        if entry.is_dir() and not entry.is_symlink():
            found += list_class_folder(entry, extensions)
    return found


def read_split_folder(folder: Path, extensions: set[str]) -> tuple[list[str], list[Sample], list[Problem]]:
    classes, samples, problems = [], [], []
    for entry in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if hidden(entry.name):
            continue
        if entry.is_dir():
            classes.append(entry.name)
            samples += [Sample(path, entry.name, str(path)) for path in list_class_folder(entry, extensions)]
        elif entry.suffix.lower() in extensions:
            problems.append(Problem(str(entry), "image outside any class folder; move it into one"))
    return classes, samples, problems


def check_class_folders(split: Path, guarded: tuple[Path, ...]) -> None:
    """Refuse a class folder (a symlink, usually) that is or holds the root or a split, or sits inside
    another split: its images would be in two splits at once, or every image would become one more class.
    `guarded` is the root, then the split folders."""
    for entry in split.iterdir():
        if entry.is_dir() and not hidden(entry.name):
            _check_class_folder(entry, split, guarded)


def _check_class_folder(entry: Path, split: Path, guarded: tuple[Path, ...]) -> None:
    target, own = entry.resolve(), split.resolve()
    for position, other in enumerate(guarded):
        other = other.resolve()
        inside_other = position > 0 and other != own and target.is_relative_to(other)
        if target == other or other.is_relative_to(target) or inside_other:
            raise TlzooError(f"{FIELD}: class folder {entry} resolves to {target}, which "
                             f"{'is inside' if inside_other else 'is or holds'} {other}; its images would "
                             "leak between splits", "remove the link, or point it at a folder of that class only")


def _data_root(root: Path, options: ImageFolderOptions) -> str:
    """The training folder option; root itself when `train` was left out and root holds class folders."""
    if "train" in options.model_fields_set or (root / options.train).is_dir():
        return options.train
    has_classes = any(entry.is_dir() and not hidden(entry.name) for entry in root.iterdir())
    return "." if has_classes and options.val_split is not None else options.train


def stratified_split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Per class: shuffle with `seed`, move round(n * fraction) files (at least one when n >= 2) to val."""
    rng = random.Random(seed)
    by_class: dict[str, list[Sample]] = {}
    for sample in samples:
        by_class.setdefault(str(sample.label), []).append(sample)
    val_paths = set()
    for name in sorted(by_class, key=natural_key):
        members = list(by_class[name])
        rng.shuffle(members)
        count = max(1, round(len(members) * fraction)) if len(members) >= 2 else 0
        val_paths.update(sample.path for sample in members[:count])
    return ([s for s in samples if s.path not in val_paths], [s for s in samples if s.path in val_paths])


VAL_SPLIT_HINT = (f"set {FIELD}.val_split (e.g. 0.2) to hold out that share of each training class for "
                  "validation (stratified, seeded)")


def split_folder(root: Path, options: ImageFolderOptions, field: str, value: str) -> Path:
    """The train or val folder; when it is missing and no val_split is set, the error says how val_split helps."""
    try:
        return option_path(root, value, field, base_name="root")
    except TlzooError as exc:
        if options.val_split is not None:
            raise
        if field == "val":
            raise TlzooError(exc.message, f"{exc.hint}; or {VAL_SPLIT_HINT}") from None
        classes = [entry.name for entry in sorted(root.iterdir()) if entry.is_dir() and not hidden(entry.name)]
        if not classes:
            raise
        shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        raise TlzooError(f"{exc.message}; root {root} itself holds folders ({shown})",
                         f"if they are the classes, {VAL_SPLIT_HINT} (train then defaults to root itself); "
                         f"or {exc.hint}") from None


def build_imagefolder(options: ImageFolderOptions, base_dir: Path) -> ReaderOutput:
    root = option_path(base_dir, options.root, "root")
    extensions = {ext.lower() if ext.startswith(".") else "." + ext.lower() for ext in options.extensions}
    in_root = "root"
    train_dir = split_folder(root, options, "train", _data_root(root, options))
    classes, train, problems = read_split_folder(train_dir, extensions)
    if not classes:
        raise TlzooError(f"{FIELD}.train: {train_dir} has no class folders",
                         "put each class's images in its own sub-folder (hidden folders are ignored)")
    val_dir = None if options.val_split is not None else split_folder(root, options, "val", options.val)
    test_dir = None if options.test is None else option_path(root, options.test, "test", base_name=in_root)
    splits = [folder for folder in (train_dir, val_dir, test_dir) if folder is not None]
    for split in splits:
        check_class_folders(split, (root, *splits))
    if val_dir is None:
        train, val = stratified_split(train, options.val_split, options.seed)
        if train and not val:  # no images at all is said by the checks after the reader
            raise TlzooError(f"{FIELD}.val_split: {options.val_split} moved no image to validation: every class "
                             f"in {train_dir} has fewer than 2 images", "add images, or give a val folder instead")
    else:
        _, val, val_problems = read_split_folder(val_dir, extensions)
        problems += val_problems
    test = None
    if test_dir is not None:
        _, test, test_problems = read_split_folder(test_dir, extensions)
        problems += test_problems
    return ReaderOutput(train=train, val=val, classes=classes, problems=problems, test=test)


# ---------------------------------------------------------------- txt_list

def one_val_source(options):
    """A list reader's validation images come from a `val` list or a `val_split` of the training list."""
    if (options.val is None) == (options.val_split is None):
        raise ValueError("give either 'val' (a list of validation images) or 'val_split' (a fraction of the "
                         "training list), " + ("not both" if options.val is not None else "one of them"))
    return options


class TxtListOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: str = Field(..., description="list of training images, one 'PATH LABEL' per line")
    val: str | None = Field(None, description="list of validation images, same format; it picks the best epoch")
    val_split: float | None = Field(None, gt=0.0, lt=1.0, description="instead of a val list: this fraction "
                                    "of each training class (stratified, seeded)")
    seed: int = Field(0, description="seed of the val_split draw")
    test: str | None = Field(None, description="list of held-out test images, scored once with the best model")
    classes: str | None = Field(None, description="file with one class name per line, line 1 is label 0")
    root: str | None = Field(None, description="folder image paths start from (default: each list's folder)")
    labels: Literal["indices", "names"] = Field(
        "indices", description="'indices': labels are class numbers (seed 001's format); 'names': labels are "
                               "class names, such as 'daisy'")

    _one_val_source = model_validator(mode="after")(one_val_source)


def txt_list_parser(options: TxtListOptions):
    def parse(path: Path, entries: ListEntries) -> None:
        """Add each 'PATH LABEL' line of `path`; the label is the last whitespace-separated token."""
        base = entries.image_root or path.parent
        rows = []
        for number, line in read_text_lines(path):
            origin = f"{path}:{number}"
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.strip().rsplit(None, 1)
            if len(parts) < 2:
                entries.problem(origin, f"expected 'PATH LABEL', got {line.strip()!r}")
                continue
            rows.append((origin, parts[0], parts[1]))
        if options.labels == "indices" and rows and not any(parse_index(label) is not None for *_, label in rows):
            names = ", ".join(repr(label) for label in dict.fromkeys(label for *_, label in rows[:50]))
            raise TlzooError(f"{path}: no label is an integer class index (labels such as {shorten(names, 80)}); "
                             f"txt_list reads labels as class indices", f"for class names as labels set {FIELD}.labels "
                             "to 'names'; or write indices (0, 1, ...) and name the classes in a classes file")
        for origin, path_text, label in rows:
            entries.add(origin, path_text, label, base, labels=options.labels)
    return parse


def build_txt_list(options: TxtListOptions, base_dir: Path) -> ReaderOutput:
    return _build_lists(options, base_dir, txt_list_parser(options))


# ---------------------------------------------------------------- csv

class CsvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: str = Field(..., description="CSV of training images with a header row")
    val: str | None = Field(None, description="CSV of validation images, same columns; it picks the best epoch")
    val_split: float | None = Field(None, gt=0.0, lt=1.0, description="instead of a val CSV: this fraction "
                                    "of each training class (stratified, seeded)")
    seed: int = Field(0, description="seed of the val_split draw")
    test: str | None = Field(None, description="CSV of held-out test images, scored once with the best model")
    path_column: str = "path"
    label_column: str = "label"
    labels: Literal["auto", "names", "indices"] = Field(
        "auto", description="'indices' reads labels as class numbers; 'auto' does so when every label is one")
    delimiter: str = Field(",", min_length=1, max_length=1)
    classes: str | None = Field(None, description="file with one class name per line, line 1 is label 0")
    root: str | None = Field(None, description="folder image paths start from (default: each CSV's folder)")

    _one_val_source = model_validator(mode="after")(one_val_source)


def csv_parser(options: CsvOptions):
    def parse(path: Path, entries: ListEntries) -> None:
        lines = read_text_lines(path)
        rows = csv.reader([line for _, line in lines], delimiter=options.delimiter)
        header = next(rows, None)
        columns = {options.path_column: "path_column", options.label_column: "label_column"}
        missing = [name for name in columns if header is None or name not in header]
        if missing:
            raise TlzooError(f"{path}:1: column(s) {', '.join(map(repr, missing))} not in the header "
                             f"{header or []}", f"name the columns in {FIELD}.path_column / label_column")
        at_path, at_label = header.index(options.path_column), header.index(options.label_column)
        base = entries.image_root or path.parent
        for (number, _), row in zip(lines[1:], rows):
            origin = f"{path}:{number}"
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                entries.problem(origin, f"{len(row)} field(s), the header has {len(header)}")
                continue
            entries.add(origin, row[at_path].strip(), row[at_label].strip(), base, labels=options.labels)
    return parse


def build_csv(options: CsvOptions, base_dir: Path) -> ReaderOutput:
    return _build_lists(options, base_dir, csv_parser(options))


def _build_lists(options, base_dir: Path, parse) -> ReaderOutput:
    image_root = option_path(base_dir, options.root, "root") if options.root else None
    classes = None
    if options.classes:
        classes_file = option_path(base_dir, options.classes, "classes", "file")
        classes = [line.strip() for _, line in read_text_lines(classes_file) if line.strip()]
    splits = {}
    for split in ("train", "val", "test"):
        if getattr(options, split) is None:
            continue
        entries = ListEntries(image_root, seen_in=splits.get("train"))
        parse(option_path(base_dir, getattr(options, split), split, "file"), entries)
        splits[split] = entries
    indices = all(entries.labels_are_indices() for entries in splits.values())
    samples = {split: entries.finish(indices) for split, entries in splits.items()}  # finish may add problems
    if options.val_split is not None:
        samples["train"], samples["val"] = stratified_split(samples["train"], options.val_split, options.seed)
        if samples["train"] and not samples["val"]:
            raise TlzooError(f"{FIELD}.val_split: {options.val_split} moved no image to validation: every class "
                             "of the training list has fewer than 2 images", "add images, or give a val list")
    notes = []
    if classes is None and indices:
        notes.append("the lists give class indices and no classes file, so the classes are named by their "
                     "indices ('0', '1', ...); give the reader's `classes` option, a file with one name per "
                     "line (line 1 is label 0), to name them")
    return ReaderOutput(train=samples["train"], val=samples["val"], classes=classes, test=samples.get("test"),
                        problems=[problem for entries in splits.values() for problem in entries.problems],
                        notes=notes)


@hookimpl
def register_dataset_readers(register):
    register(Component("imagefolder", "Class sub-folders in train/val folders, or one folder with val_split",
                       build_imagefolder, ImageFolderOptions))
    register(Component("txt_list", "Lists of 'PATH LABEL' lines (seed 001's train.txt/test.txt)",
                       build_txt_list, TxtListOptions))
    register(Component("csv", "CSV files with path and label columns; labels as names or integers",
                       build_csv, CsvOptions))
