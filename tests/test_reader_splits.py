"""Splits that tell the truth: one-folder val_split, no image in two splits, and a held-out test split."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from tlzoo.data.labelled import labelled_from
from tlzoo.errors import TlzooError
from tlzoo.registry import get_registry


def image(path: Path, shade: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), (shade, 100, 30)).save(path)
    return path


def tree(root: Path, split: str, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        for index in range(count):
            image(root / split / name / f"{index}.png", index * 20)
    return root / split


def build(name: str, base_dir: Path, **options):
    component = get_registry().readers.get_component(name)
    return component.build(component.options.model_validate(options), base_dir)


# ---- val_split on one folder (issue 10, item 14)

def test_val_split_with_root_pointing_at_the_class_folders(tmp_path):
    folder = tree(tmp_path / "flowers", "train", {"daisy": 5, "rose": 5})
    output = build("imagefolder", tmp_path, root=str(folder), val_split=0.2)
    assert output.classes == ["daisy", "rose"]
    assert len(output.train) == 8 and len(output.val) == 2


def test_train_dot_is_the_root_itself(tmp_path):
    folder = tree(tmp_path / "flowers", "all", {"daisy": 4, "rose": 4})
    output = build("imagefolder", tmp_path, root=str(folder), train=".", val_split=0.25)
    assert len(output.train) == 6 and len(output.val) == 2


def test_a_missing_split_folder_hint_names_root_as_its_base(tmp_path):
    tree(tmp_path / "d", "train", {"a": 2})
    with pytest.raises(TlzooError) as caught:
        build("imagefolder", tmp_path, root="d", val="validation")
    text = str(caught.value)
    assert "relative paths start from root" in text and str(tmp_path / "d") in text
    assert "spec file's folder" not in text


def test_val_split_that_moves_nothing_names_val_split(tmp_path):
    tree(tmp_path / "d", "train", {"a": 1, "b": 1})
    with pytest.raises(TlzooError, match=r"val_split: 0.2 moved no image to validation") as caught:
        build("imagefolder", tmp_path, root="d", val_split=0.2)
    assert "set its val_split" not in str(caught.value)


# ---- no image in two splits (issue 11, item 11)

def test_class_folder_linked_to_the_root_is_refused(tmp_path):
    root = tmp_path / "d"
    tree(root, "train", {"a": 2, "b": 2})
    tree(root, "val", {"a": 1, "b": 1})
    os.symlink(root, root / "train" / "everything")
    with pytest.raises(TlzooError, match=r"class folder .*everything resolves to .* leak between splits"):
        build("imagefolder", tmp_path, root="d")


def test_class_folder_linked_into_another_split_is_refused(tmp_path):
    root = tmp_path / "d"
    tree(root, "train", {"a": 2})
    tree(root, "val", {"a": 1, "b": 1})
    os.symlink(root / "val" / "b", root / "train" / "b")
    with pytest.raises(TlzooError, match=r"is inside .*val"):
        build("imagefolder", tmp_path, root="d")


def test_an_image_in_train_and_val_through_a_symlink_is_reported(tmp_path):
    root = tmp_path / "d"
    tree(root, "train", {"a": 2, "b": 2})
    tree(root, "val", {"a": 1})
    (root / "val" / "b").mkdir()
    os.symlink(root / "train" / "b" / "0.png", root / "val" / "b" / "0.png")
    output = build("imagefolder", tmp_path, root="d")
    with pytest.raises(TlzooError, match=r"1 image\(s\) appear in more than one split") as caught:
        labelled_from(output)
    assert "val/b/0.png: in val, and in train as" in str(caught.value)


# ---- a held-out test split (issue 10, item 15)

def test_imagefolder_test_folder(tmp_path):
    root = tmp_path / "d"
    tree(root, "train", {"a": 3, "b": 3})
    tree(root, "val", {"a": 1, "b": 1})
    tree(root, "test", {"b": 2})
    output = build("imagefolder", tmp_path, root="d", test="test")
    data = labelled_from(output)
    assert [index for _, index in data.test] == [1, 1] and len(data.val) == 2
    assert build("imagefolder", tmp_path, root="d").test is None


def test_test_split_class_unknown_to_training_is_an_error(tmp_path):
    root = tmp_path / "d"
    tree(root, "train", {"a": 2})
    tree(root, "val", {"a": 1})
    tree(root, "test", {"zebra": 1})
    with pytest.raises(TlzooError, match="class 'zebra' in test is not in the class list"):
        labelled_from(build("imagefolder", tmp_path, root="d", test="test"))


def test_txt_list_and_csv_test_lists(tmp_path):
    paths = [image(tmp_path / "img" / f"{index}.png", index * 30) for index in range(6)]
    (tmp_path / "train.txt").write_text("".join(f"img/{p.name} {i % 2}\n" for i, p in enumerate(paths[:4])))
    (tmp_path / "val.txt").write_text(f"img/{paths[4].name} 0\n")
    (tmp_path / "test.txt").write_text(f"img/{paths[5].name} 1\n")
    output = build("txt_list", tmp_path, train="train.txt", val="val.txt", test="test.txt")
    assert [(s.path.name, s.label) for s in output.test] == [("5.png", 1)]
    assert labelled_from(output).test == [(paths[5], 1)]
    (tmp_path / "train.csv").write_text("path,label\n" + "".join(f"img/{p.name},{'ab'[i % 2]}\n"
                                                                 for i, p in enumerate(paths[:4])))
    (tmp_path / "val.csv").write_text(f"path,label\nimg/{paths[4].name},a\n")
    (tmp_path / "test.csv").write_text(f"path,label\nimg/{paths[5].name},b\nimg/{paths[4].name},a\n")  # val image
    with pytest.raises(TlzooError, match="appear in more than one split"):
        labelled_from(build("csv", tmp_path, train="train.csv", val="val.csv", test="test.csv"))
    assert build("csv", tmp_path, train="train.csv", val="val.csv").test is None
