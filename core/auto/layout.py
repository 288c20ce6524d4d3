"""What DATA is: a folder of split folders, one folder of class folders, a `path label` list or a CSV.

`detect_layout` turns DATA into the reader entry of a spec, the one that `tlzoo
run` would take, so the chosen spec re-runs as it is. Validation is DATA's own
val folder when it has one, else a stratified, seeded fraction of each class
(the readers' `val_split`). The test split (DATA/test, or --test) goes into the
final spec only: the search's spec has none, so no test image is read before
the final model is fixed.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tlzoo.data.class_mapping import map_splits
from tlzoo.data.images import IMAGE_EXTENSIONS
from tlzoo.data.samples import ReaderOutput
from tlzoo.errors import TlzooError

VAL_FRACTION = 0.2
TRAIN_NAME = "train"
VAL_NAMES = ("val", "valid", "validation")
TEST_NAMES = ("test",)
PATH_COLUMNS = ("path", "file", "filename", "filepath", "image", "image_path", "img")
LABEL_COLUMNS = ("label", "class", "category", "target")
SYSTEM_FILES = ("thumbs.db", "desktop.ini")  # written by Windows Explorer into photo folders
LAYOUT_HINT = ("tlzoo train takes a folder with train/ (and val/, test/) of class folders, one folder of class "
               "folders, a 'PATH LABEL' .txt list, or a CSV with path and label columns")


@dataclass
class Layout:
    kind: str  # "split folders", "class folders", "txt list" or "csv"
    source: Path  # DATA, resolved
    reader: dict  # the reader component without a test split: what the search reads
    test: str | None  # the reader's `test` option in the final spec
    validation: str  # where validation comes from, in words

    def final_reader(self) -> dict:
        """The reader of the final spec: the search's, plus the held-out test split."""
        options = dict(self.reader["options"])
        if self.test is not None:
            options["test"] = self.test
        return {"name": self.reader["name"], "options": options}


def visible_folders(folder: Path) -> list[Path]:
    return [entry for entry in sorted(folder.iterdir()) if entry.is_dir() and not entry.name.startswith(".")]


def loose_images(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS]


def detect_layout(data: Path, test: Path | None = None, seed: int = 0, fraction: float = VAL_FRACTION) -> Layout:
    """The layout of DATA, or a TlzooError that says what is wrong and how to lay it out."""
    data = Path(data).expanduser()
    if not data.exists():
        raise TlzooError(f"DATA {data} does not exist", LAYOUT_HINT)
    data = data.resolve()
    test_path = None if test is None else Path(test).expanduser().resolve()
    if test_path is not None and not test_path.exists():
        raise TlzooError(f"--test {test} does not exist", "pass the held-out folder (or list) of labelled images")
    split = {"val_split": fraction, "seed": seed}
    percent = f"a stratified {fraction:.0%} of each class (seed {seed})"
    if data.is_file():
        refuse_non_list(data)
        if test_path is not None and not test_path.is_file():
            raise TlzooError(f"--test {test} is a folder, but DATA is a list",
                             "pass a held-out list in DATA's format (or lay the images out in folders)")
        test_option = None if test_path is None else str(test_path)
        if data.suffix.lower() == ".csv":
            columns = csv_columns(data)
            return Layout("csv", data, {"name": "csv", "options": {"train": str(data), **columns, **split}},
                          test_option, percent)
        options = {"train": str(data), **split, **txt_labels(data)}
        return Layout("txt list", data, {"name": "txt_list", "options": options}, test_option, percent)
    if test_path is not None and not test_path.is_dir():
        raise TlzooError(f"--test {test} is a file, but DATA is a folder", "pass a folder of class folders")
    folders = {entry.name.lower(): entry for entry in visible_folders(data)}
    if TRAIN_NAME in folders:
        options = {"root": str(data), "train": folders[TRAIN_NAME].name}
        val = next((folders[name] for name in VAL_NAMES if name in folders), None)
        options.update({"val": val.name} if val is not None else split)
        found = next((folders[name] for name in TEST_NAMES if name in folders), None)
        test_option = str(test_path) if test_path is not None else (found.name if found is not None else None)
        return Layout("split folders", data, {"name": "imagefolder", "options": options}, test_option,
                      f"{val.name}/" if val is not None else percent)
    others = [name for name in (*VAL_NAMES, *TEST_NAMES) if name in folders and visible_folders(folders[name])]
    if others:
        raise TlzooError(f"{data} has {folders[others[0]].name}/ but no train/ folder",
                         f"move the training class folders into {data / TRAIN_NAME}/ "
                         f"(the layout train/, val/, test/ of class folders)")
    if not folders:
        images = loose_images(data)
        if images:
            raise TlzooError(f"{data} holds {len(images)} image(s) but no class folders",
                             f"put each class's images in a sub-folder named after the class "
                             f"({data / 'cats'}/, {data / 'dogs'}/, ...)")
        raise TlzooError(f"{data} holds no images", LAYOUT_HINT)
    test_option = None if test_path is None else str(test_path)
    return Layout("class folders", data, {"name": "imagefolder", "options": {"root": str(data), "train": ".",
                                                                             **split}},
                  test_option, percent)


ARCHIVES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar")


def refuse_non_list(path: Path) -> None:
    """An archive or a single image given as DATA, which would otherwise be read as a garbled list."""
    suffix = path.suffix.lower()
    if suffix in ARCHIVES:
        how = f"unzip {path.name} -d {path.stem}" if suffix == ".zip" else f"tar -xf {path.name}, or your archive tool"
        raise TlzooError(f"DATA {path} is an archive", f"unpack it first ({how}) and pass the folder it holds")
    if suffix in IMAGE_EXTENSIONS:
        raise TlzooError(f"DATA {path} is one image", LAYOUT_HINT)


DELIMITERS = (",", ";", "\t", "|")  # ';' is what a spreadsheet saves as CSV where ',' is the decimal mark


def csv_columns(path: Path) -> dict:
    """path_column and label_column from the CSV's header (common names accepted), and its delimiter when the
    header is not comma-separated."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise TlzooError(f"cannot read {path}: {exc}", "pass a UTF-8 CSV with a header row") from None
    delimiter = max(DELIMITERS, key=first.count) if any(mark in first for mark in DELIMITERS) else ","
    header = next(csv.reader([first], delimiter=delimiter), [])
    by_name = {name.strip().lower(): name.strip() for name in header}
    path_column = next((by_name[name] for name in PATH_COLUMNS if name in by_name), None)
    label_column = next((by_name[name] for name in LABEL_COLUMNS if name in by_name), None)
    if path_column is None or label_column is None:
        raise TlzooError(f"{path}:1: no {'path' if path_column is None else 'label'} column in the header {header}",
                         f"name the columns 'path' and 'label' (also accepted: {', '.join(PATH_COLUMNS[1:])}; "
                         f"{', '.join(LABEL_COLUMNS[1:])})")
    return {"path_column": path_column, "label_column": label_column,
            **({} if delimiter == "," else {"delimiter": delimiter})}


def txt_labels(path: Path) -> dict:
    """{"labels": "names"} when no label of the list is an integer (seed 001's lists hold indices)."""
    try:
        lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    except OSError as exc:
        raise TlzooError(f"cannot read {path}: {exc.strerror}", "pass a readable 'PATH LABEL' list") from None
    labels = [line.strip().rsplit(None, 1)[-1] for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return {} if any(label.lstrip("-").isdigit() for label in labels) or not labels else {"labels": "names"}


def class_counts(output: ReaderOutput) -> tuple[list[str], Counter]:
    """Class names and images per class over train and validation (the test split is not counted)."""
    listing = ReaderOutput(output.train, output.val, output.classes, list(output.problems), None, output.notes)
    classes, splits = map_splits(listing)
    counts = Counter(index for split in ("train", "val") for _, index in splits[split])
    return classes, counts


def check_usable(output: ReaderOutput, layout: Layout) -> None:
    """Refuse what cannot be trained, naming the fix: no images, a single class, a class with one image."""
    classes, counts = class_counts(output)
    where = layout.source
    if not output.train:
        raise TlzooError(f"no images found in {where} (files ending in {' '.join(IMAGE_EXTENSIONS)})", LAYOUT_HINT)
    present = [name for index, name in enumerate(classes) if counts[index]]
    if len(present) < 2:
        named = f" ({present[0]!r})" if present else ""
        raise TlzooError(f"{where} holds one class{named}: a classifier needs at least two",
                         "add a folder (or labels) for each other class")
    single = [name for index, name in enumerate(classes) if counts[index] == 1]
    if single:
        raise TlzooError(f"{len(single)} class(es) with only one image: {', '.join(map(repr, single[:10]))}",
                         "each class needs an image to train on and one to validate with: add images, or remove "
                         "the class")


def not_images(layout: Layout) -> Counter:
    """Files inside the class folders that are not read as images (a video, a note), by suffix: named in the
    summary line, so a user sees what was left out. Hidden names are skipped, as the readers skip them."""
    if layout.kind not in ("class folders", "split folders"):
        return Counter()
    class_depth = 1 if layout.kind == "class folders" else 2  # files above it are the reader's own report
    found: Counter = Counter()
    for folder, subfolders, files in os.walk(layout.source):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        if len(Path(folder).relative_to(layout.source).parts) < class_depth:
            continue
        found.update(Path(name).suffix.lower() or "(no suffix)" for name in files
                     if not name.startswith(".") and name.lower() not in SYSTEM_FILES
                     and Path(name).suffix.lower() not in IMAGE_EXTENSIONS)
    return found


def left_out_text(found: Counter) -> str:
    if not found:
        return ""
    kinds = ", ".join(f"{count} {suffix}" for suffix, count in found.most_common(3))
    more = f" and {sum(found.values()) - sum(c for _, c in found.most_common(3))} more" if len(found) > 3 else ""
    return f"; left out, not image files: {kinds}{more}"


def summary_line(layout: Layout, data, test_count: int | None) -> str:
    """One line: what DATA is, classes, images per split, the smallest class (data: the search's LabelledData)."""
    per_class = Counter(label for _, label in data.train)
    smallest = min(range(len(data.classes)), key=lambda index: (per_class[index], data.classes[index]))
    test = (f", {test_count} test (held out until the end: {layout.test})" if test_count is not None
            else ", no test split")
    skipped = f"; {len(data.skipped)} file(s) skipped" if data.skipped else ""
    return (f"data: {layout.source} is {article(layout.kind)}: {len(data.classes)} classes, {len(data.train)} train / "
            f"{len(data.val)} val (from {layout.validation}){test}; smallest class {data.classes[smallest]!r} "
            f"with {per_class[smallest]} training images{skipped}{left_out_text(not_images(layout))}")


def article(kind: str) -> str:
    return {"split folders": "a folder of split folders", "class folders": "a folder of class folders",
            "txt list": "a 'PATH LABEL' list", "csv": "a CSV list"}[kind]
