"""The built-in readers on tiny trees and lists made in the test."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from tlzoo.data.labelled import load_labelled
from tlzoo.errors import SpecError, TlzooError
from tlzoo.spec import resolve_spec
from tlzoo.registry import get_registry


def image(path: Path, colour=(0, 120, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return path


def reader(name: str):
    return get_registry().readers.get_component(name)


def build(name: str, base_dir: Path, **options):
    component = reader(name)
    return component.build(component.options.model_validate(options), base_dir)


def tree(root: Path, spec: dict[str, dict[str, int]]) -> None:
    for split, classes in spec.items():
        for name, count in classes.items():
            for i in range(count):
                image(root / split / name / f"img{i}.png")


# ---------------------------------------------------------------- imagefolder

def test_imagefolder_train_and_val_folders(tmp_path):
    tree(tmp_path / "data", {"train": {"cat": 2, "dog": 3}, "test": {"cat": 1, "dog": 1}})
    output = build("imagefolder", tmp_path, root="data", val="test")
    assert output.classes == ["cat", "dog"]
    assert Counter(s.label for s in output.train) == {"cat": 2, "dog": 3}
    assert [s.label for s in output.val] == ["cat", "dog"]
    assert all(s.path.is_file() and s.origin == str(s.path) for s in output.train + output.val)
    assert output.problems == []


def test_imagefolder_ignores_hidden_folders_and_files_and_non_images(tmp_path):
    root = tmp_path / "d"
    tree(root, {"train": {"a": 1, "b": 1}, "val": {"a": 1}})
    image(root / "train" / ".ipynb_checkpoints" / "img0-checkpoint.png")
    image(root / "train" / "a" / ".ipynb_checkpoints" / "x.png")
    image(root / "train" / "a" / ".hidden.png")
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    image(root / "train" / "a" / "nested" / "deep.JPG")
    output = build("imagefolder", tmp_path, root="d")
    assert output.classes == ["a", "b"]
    assert sorted(s.path.name for s in output.train) == ["deep.JPG", "img0.png", "img0.png"]


def test_imagefolder_keeps_odd_entries_for_the_scan(tmp_path):
    root = tmp_path / "d"
    tree(root, {"train": {"a": 1}, "val": {"a": 1}})
    (root / "train" / "a" / "folder.jpg").mkdir()
    (root / "train" / "a" / "link.png").symlink_to(root / "gone.png")
    image(root / "train" / "stray.png")
    output = build("imagefolder", tmp_path, root="d")
    names = {s.path.name for s in output.train}
    assert {"folder.jpg", "link.png"} <= names
    assert [(p.origin, p.reason) for p in output.problems] == [
        (str(root / "train" / "stray.png"), "image outside any class folder; move it into one")]


def test_imagefolder_val_split_is_stratified_and_seeded(tmp_path):
    tree(tmp_path, {"all": {"a": 10, "b": 20, "c": 1}})
    first = build("imagefolder", tmp_path, root=".", train="all", val_split=0.2, seed=3)
    again = build("imagefolder", tmp_path, root=".", train="all", val_split=0.2, seed=3)
    other = build("imagefolder", tmp_path, root=".", train="all", val_split=0.2, seed=4)
    assert Counter(s.label for s in first.val) == {"a": 2, "b": 4}  # c has one image: it stays in train
    assert Counter(s.label for s in first.train) == {"a": 8, "b": 16, "c": 1}
    assert [s.path for s in first.val] == [s.path for s in again.val]
    assert [s.path for s in first.val] != [s.path for s in other.val]
    assert not {s.path for s in first.val} & {s.path for s in first.train}


def test_imagefolder_options_errors(tmp_path):
    options = reader("imagefolder").options
    with pytest.raises(ValidationError, match="not both"):
        options.model_validate({"root": ".", "val": "v", "val_split": 0.1})
    with pytest.raises(ValidationError, match="Extra inputs"):
        options.model_validate({"root": ".", "vall": "v"})
    with pytest.raises(TlzooError, match=r"data.reader.options.root: folder .*missing does not exist"):
        build("imagefolder", tmp_path, root="missing")
    tree(tmp_path / "d", {"train": {"a": 1}})
    with pytest.raises(TlzooError, match=r"data.reader.options.val: folder .*d/val does not exist"):
        build("imagefolder", tmp_path, root="d")
    (tmp_path / "e" / "train").mkdir(parents=True)
    with pytest.raises(TlzooError, match="has no class folders"):
        build("imagefolder", tmp_path, root="e")


def test_imagefolder_through_the_spec(tmp_path):
    tree(tmp_path / "data", {"train": {"x": 2, "y": 2}, "val": {"x": 1, "y": 1}})
    raw = {"data": {"reader": {"name": "imagefolder", "options": {"root": "data"}}}}
    data = load_labelled(resolve_spec(raw, get_registry(), tmp_path))
    assert data.classes == ["x", "y"] and len(data.train) == 4 and len(data.val) == 2
    raw["data"]["reader"] = {"name": "imagefolders", "options": {"root": "data"}}
    with pytest.raises(SpecError, match="Did you mean: imagefolder"):
        resolve_spec(raw, get_registry(), tmp_path)


def test_photo_formats_are_read_or_reported_with_what_to_do(tmp_path):
    """JPEGs saved as .jfif/.jpe and AVIF photos train; an iPhone's HEIC is reported, never passed over."""
    tree(tmp_path / "data", {"train": {"x": 3, "y": 3}, "val": {"x": 1, "y": 1}})
    image(tmp_path / "data" / "train" / "x" / "saved.jfif")
    Image.new("RGB", (16, 16), (90, 0, 0)).save(tmp_path / "data" / "train" / "y" / "web.jpe", format="JPEG")
    image(tmp_path / "data" / "train" / "y" / "phone.avif")
    heic = tmp_path / "data" / "train" / "x" / "IMG_0001.HEIC"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    raw = {"data": {"reader": {"name": "imagefolder", "options": {"root": "data"}}}}
    data = load_labelled(resolve_spec(raw, get_registry(), tmp_path))
    assert {"saved.jfif", "web.jpe", "phone.avif"} <= {path.name for path, _ in data.train}
    assert len(data.train) == 9
    [problem] = data.skipped
    assert problem.origin == str(heic)
    assert "HEIC photo, which tlzoo cannot decode: convert it to JPEG" in problem.reason


# ---------------------------------------------------------------- txt_list

def lists(tmp_path: Path, train: bytes, val: bytes = b"imgs/a1.png 0\n") -> Path:
    for name in ("a0", "a1", "b0", "b1"):
        image(tmp_path / "imgs" / f"{name}.png")
    image(tmp_path / "imgs" / "with space" / "c d.png")
    (tmp_path / "train.txt").write_bytes(train)
    (tmp_path / "test.txt").write_bytes(val)
    return tmp_path


def test_txt_list_seed_format(tmp_path):
    lists(tmp_path, b"imgs/a0.png 0\nimgs/b0.png 1\n./imgs/b1.png 1\n", b"imgs/a1.png 0\n")
    output = build("txt_list", tmp_path, train="train.txt", val="test.txt")
    assert [(s.path, s.label, s.origin) for s in output.train] == [
        (tmp_path / "imgs" / "a0.png", 0, f"{tmp_path / 'train.txt'}:1"),
        (tmp_path / "imgs" / "b0.png", 1, f"{tmp_path / 'train.txt'}:2"),
        (tmp_path / "imgs" / "b1.png", 1, f"{tmp_path / 'train.txt'}:3")]
    assert output.val[0].label == 0 and output.classes is None and output.problems == []


@pytest.mark.parametrize("kind", ["txt_list", "csv"])
def test_list_readers_split_validation_off_the_training_list(tmp_path, kind):
    for name in [f"{c}{i}" for c in "ab" for i in range(5)]:
        image(tmp_path / "imgs" / f"{name}.png")
    names = [f"imgs/{c}{i}.png" for c in "ab" for i in range(5)]
    if kind == "txt_list":
        (tmp_path / "all.txt").write_text("".join(f"{n} {'ab'.index(n[5])}\n" for n in names))
    else:
        (tmp_path / "all.txt").write_text("path,label\n" + "".join(f"{n},{n[5]}\n" for n in names))
    output = build(kind, tmp_path, train="all.txt", val_split=0.4, seed=1)
    assert len(output.train) == 6 and Counter(str(s.label) for s in output.val) == Counter({"0": 2, "1": 2} if
                                                                                           kind == "txt_list" else
                                                                                           {"a": 2, "b": 2})
    again = build(kind, tmp_path, train="all.txt", val_split=0.4, seed=1)
    assert again.val == output.val and build(kind, tmp_path, train="all.txt", val_split=0.4, seed=2).val != output.val
    options = reader(kind).options
    with pytest.raises(ValidationError, match="not both"):
        options.model_validate({"train": "all.txt", "val": "v.txt", "val_split": 0.2})
    with pytest.raises(ValidationError, match="one of them"):
        options.model_validate({"train": "all.txt"})


def test_txt_list_blank_lines_crlf_bom_spaces_comments(tmp_path):
    text = "\ufeffimgs/a0.png 0\r\n\r\n   \r\n# a comment\r\nimgs/with space/c d.png\t1\r\n  imgs/b0.png   1  \r\n"
    lists(tmp_path, text.encode("utf-8"))
    output = build("txt_list", tmp_path, train="train.txt", val="test.txt")
    assert [(s.path.name, s.label, s.origin.rsplit(":", 1)[1]) for s in output.train] == [
        ("a0.png", 0, "1"), ("c d.png", 1, "5"), ("b0.png", 1, "6")]
    assert output.problems == []


def test_txt_list_bad_lines_are_reported_by_file_and_line(tmp_path):
    text = b"imgs/a0.png 0\nimgs/a1.png cat\nimgs/b0.png -1\nimgs/b1.png\nimgs/a0.png 0\nimgs/./a0.png 1\nimgs/b1.png 1\n"
    lists(tmp_path, text, b"imgs/b1.png 1\nimgs/a1.png 0\n")
    output = build("txt_list", tmp_path, train="train.txt", val="test.txt")
    train_txt, test_txt = tmp_path / "train.txt", tmp_path / "test.txt"
    assert [(p.origin, p.reason) for p in output.problems] == [
        (f"{train_txt}:2", "label 'cat' is not an integer class index"),
        (f"{train_txt}:3", "label -1 is negative; class indices start at 0"),
        (f"{train_txt}:4", "expected 'PATH LABEL', got 'imgs/b1.png'"),
        (f"{train_txt}:5", f"duplicate of {train_txt}:1; this line is ignored"),
        (f"{train_txt}:6", f"listed again with label '1' ('0' first) of {train_txt}:1; this line is ignored"),
        (f"{test_txt}:1", f"also in the training list at {train_txt}:7; an image must not be in both splits, "
                          "this line is ignored"),
    ]
    assert [s.origin for s in output.train] == [f"{train_txt}:1", f"{train_txt}:7"]
    assert [s.path.name for s in output.val] == ["a1.png"]


def test_txt_list_classes_file_and_root(tmp_path):
    lists(tmp_path, b"a0.png 0\nb0.png 1\n", b"a1.png 0\n")
    (tmp_path / "classes.txt").write_bytes(b"\xef\xbb\xbfapple\r\nbanana\r\n\r\n")
    output = build("txt_list", tmp_path, train="train.txt", val="test.txt", classes="classes.txt", root="imgs")
    assert output.classes == ["apple", "banana"]
    assert output.train[1].path == tmp_path / "imgs" / "b0.png"
    assert output.notes == []


def test_txt_list_without_classes_file_says_classes_are_named_by_index(tmp_path):
    lists(tmp_path, b"imgs/a0.png 0\nimgs/b0.png 1\n", b"imgs/a1.png 0\n")
    output = build("txt_list", tmp_path, train="train.txt", val="test.txt")
    assert len(output.notes) == 1 and "'0', '1'" in output.notes[0] and "`classes` option" in output.notes[0]


def test_txt_list_missing_file_and_bad_encoding(tmp_path):
    with pytest.raises(TlzooError, match=r"data.reader.options.train: file .*nope.txt does not exist"):
        build("txt_list", tmp_path, train="nope.txt", val="nope.txt")
    lists(tmp_path, b"imgs/a0.png 0\n\xff\xfe 1\n")
    with pytest.raises(TlzooError, match=r"train.txt:2: not UTF-8 text"):
        build("txt_list", tmp_path, train="train.txt", val="test.txt")


# ---------------------------------------------------------------- csv

def test_csv_names(tmp_path):
    lists(tmp_path, b"")
    (tmp_path / "train.csv").write_text('path,label\nimgs/a0.png,apple\n"imgs/with space/c d.png",banana\n\n')
    (tmp_path / "val.csv").write_text("path,label\r\nimgs/a1.png,apple\r\n")
    output = build("csv", tmp_path, train="train.csv", val="val.csv")
    assert [(s.path.name, s.label) for s in output.train] == [("a0.png", "apple"), ("c d.png", "banana")]
    assert output.val[0].origin == f"{tmp_path / 'val.csv'}:2"


def test_csv_integer_labels_and_custom_columns(tmp_path):
    lists(tmp_path, b"")
    (tmp_path / "train.csv").write_text("file;id;extra\nimgs/a0.png;0;x\nimgs/b0.png;1;y\n")
    (tmp_path / "val.csv").write_text("file;id;extra\nimgs/a1.png;0;x\n")
    options = dict(train="train.csv", val="val.csv", path_column="file", label_column="id", delimiter=";")
    assert [s.label for s in build("csv", tmp_path, **options).train] == [0, 1]
    assert [s.label for s in build("csv", tmp_path, labels="names", **options).train] == ["0", "1"]


def test_csv_problems(tmp_path):
    lists(tmp_path, b"")
    (tmp_path / "train.csv").write_text("path,label\nimgs/a0.png,0\nimgs/b0.png\nimgs/b1.png,-2\nimgs/a1.png,\n")
    (tmp_path / "val.csv").write_text("path,label\nimgs/a0.png,0\n")
    output = build("csv", tmp_path, train="train.csv", val="val.csv")
    reasons = [(p.origin.rsplit("/", 1)[1], p.reason) for p in output.problems]
    assert reasons == [("train.csv:3", "1 field(s), the header has 2"),
                       ("train.csv:4", "label -2 is negative; class indices start at 0"),
                       ("train.csv:5", "empty label"),
                       ("val.csv:2", f"also in the training list at {tmp_path / 'train.csv'}:2; an image must not "
                                     "be in both splits, this line is ignored")]
    (tmp_path / "bad.csv").write_text("image,class\nimgs/a0.png,0\n")
    with pytest.raises(TlzooError, match=r"bad.csv:1: column\(s\) 'path', 'label' not in the header"):
        build("csv", tmp_path, train="bad.csv", val="val.csv")



def test_make_txt_lists_agrees_with_imagefolder(tmp_path):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "examples" / "make_txt_lists.py"
    spec = importlib.util.spec_from_file_location("make_txt_lists", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tree(tmp_path / "flowers", {"train": {"rose 2": 2, "rose10": 1, "daisy": 1}, "test": {"daisy": 1, "rose10": 1}})
    written = module.write_lists(tmp_path / "flowers", tmp_path / "lists")
    assert written == {"train.txt": 4, "test.txt": 2, "classes.txt": 3}
    assert (tmp_path / "lists" / "train.txt").read_text().splitlines()[0] == "../flowers/train/daisy/img0.png 0"
    raw = {"data": {"reader": {"name": "txt_list", "options": {
        "train": "lists/train.txt", "val": "lists/test.txt", "classes": "lists/classes.txt"}}}}
    from_lists = load_labelled(resolve_spec(raw, get_registry(), tmp_path))
    raw = {"data": {"reader": {"name": "imagefolder", "options": {"root": "flowers", "val": "test"}}}}
    from_folders = load_labelled(resolve_spec(raw, get_registry(), tmp_path))
    assert from_lists.classes == from_folders.classes == ["daisy", "rose10", "rose 2"]  # natural_key order
    assert from_lists.train == from_folders.train and from_lists.val == from_folders.val
