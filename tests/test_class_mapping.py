"""Class indices come from the training split; validation maps by name; bad labels name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tlzoo.data.class_mapping import map_classes
from tlzoo.data.labelled import labelled_from, load_labelled
from tlzoo.errors import TlzooError
from tlzoo.data.samples import ReaderOutput, Sample
from tlzoo.spec import resolve_spec
from tlzoo.registry import get_registry


def sample(label, origin="list.txt:1", path="x.png") -> Sample:
    return Sample(Path(path), label, origin)


def image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (40, 40, 200)).save(path)
    return path


def test_names_are_sorted_naturally_and_val_maps_by_name():
    output = ReaderOutput(train=[sample(name) for name in ("class10", "class2", "Class1", "class2")],
                          val=[sample("class10"), sample("class2")])
    classes, train, val = map_classes(output)
    assert classes == ["Class1", "class2", "class10"]
    assert [index for _, index in train] == [2, 1, 0, 1]
    assert [index for _, index in val] == [2, 1]


def test_the_readers_own_class_order_wins():
    output = ReaderOutput(train=[sample("b"), sample(1)], val=[sample("a")], classes=["b", "a"])
    classes, train, val = map_classes(output)
    assert classes == ["b", "a"] and [i for _, i in train] == [0, 1] and [i for _, i in val] == [1]


def test_integer_labels_without_names_give_0_to_max():
    classes, train, _ = map_classes(ReaderOutput(train=[sample(2), sample(0), sample(1)], val=[sample(2)]))
    assert classes == ["0", "1", "2"] and [i for _, i in train] == [2, 0, 1]


def test_val_class_missing_from_train_names_file_and_line():
    output = ReaderOutput(train=[sample("cat", "train.txt:1")],
                          val=[sample("cat", "val.csv:2"), sample("dog", "val.csv:3"), sample("emu", "val.csv:9")])
    with pytest.raises(TlzooError) as caught:
        map_classes(output)
    message = str(caught.value)
    assert message.startswith("2 label problem(s):")
    assert "val.csv:3: class 'dog' in val is not in the training split" in message
    assert "val.csv:9: class 'emu' in val is not in the training split" in message


def test_label_out_of_range_names_file_and_line():
    with pytest.raises(TlzooError, match=r"test.txt:4: label 5 is out of range: there are 3 classes \(0..2\)"):
        map_classes(ReaderOutput(train=[sample(0), sample(1)], val=[sample(5, "test.txt:4")],
                                 classes=["a", "b", "c"]))
    with pytest.raises(TlzooError, match=r"test.txt:2: label 2 is out of range: there are 2 classes"):
        map_classes(ReaderOutput(train=[sample(0), sample(1)], val=[sample(2, "test.txt:2")]))


def test_unknown_name_against_a_class_list():
    with pytest.raises(TlzooError, match=r"t.csv:7: class 'kiwi' in train is not in the class list"):
        map_classes(ReaderOutput(train=[sample("kiwi", "t.csv:7")], val=[], classes=["apple"]))


def test_a_near_miss_label_names_the_class_it_likely_means():
    output = ReaderOutput(train=[sample("Sun_Flower", "train.txt:1"), sample("daisy", "train.txt:2"),
                                 sample("cat", "train.txt:3")],
                          val=[sample("sunflower", "val.txt:1"), sample("daisey", "val.txt:2"),
                               sample("dog", "val.txt:3"), sample("Cat ", "val.txt:4")])
    with pytest.raises(TlzooError) as caught:
        map_classes(output)
    lines = str(caught.value).splitlines()
    assert "val.txt:1: class 'sunflower' in val is not in the training split (did you mean 'Sun_Flower'?)" in lines[1]
    assert "(did you mean 'daisy'?)" in lines[2] and "(did you mean 'cat'?)" in lines[4]
    assert lines[3].endswith("val.txt:3: class 'dog' in val is not in the training split")  # nothing close: no guess


def test_class_listed_twice_is_an_error():
    with pytest.raises(TlzooError, match="class name\\(s\\) listed twice: a"):
        map_classes(ReaderOutput(train=[sample(0)], val=[], classes=["a", "b", "a"]))


def folder_spec(tmp_path: Path, **data) -> dict:
    return {"data": {"reader": {"name": "imagefolder", "options": {"root": str(tmp_path)}}, **data}}


def test_empty_class_folder_is_an_error_unless_allowed(tmp_path):
    image(tmp_path / "train" / "full" / "0.png")
    image(tmp_path / "train" / "zfull" / "0.png")
    (tmp_path / "train" / "empty").mkdir()
    image(tmp_path / "val" / "full" / "0.png")
    with pytest.raises(TlzooError, match="class\\(es\\) with no training images: empty") as caught:
        load_labelled(resolve_spec(folder_spec(tmp_path), get_registry(), tmp_path))
    assert "data.allow_empty_classes" in str(caught.value)
    data = load_labelled(resolve_spec(folder_spec(tmp_path, allow_empty_classes=True), get_registry(), tmp_path))
    assert data.classes == ["empty", "full", "zfull"]
    assert [index for _, index in data.train] == [1, 2]


def test_gap_in_integer_labels_is_an_empty_class(tmp_path):
    paths = [image(tmp_path / f"{i}.png") for i in range(3)]
    output = ReaderOutput(train=[Sample(paths[0], 0, "l:1"), Sample(paths[1], 2, "l:2")],
                          val=[Sample(paths[2], 0, "v:1")])
    with pytest.raises(TlzooError, match="no training images: 1"):
        labelled_from(output)
    assert labelled_from(output, allow_empty_classes=True).classes == ["0", "1", "2"]


def test_no_validation_images_is_an_error(tmp_path):
    path = image(tmp_path / "a.png")
    with pytest.raises(TlzooError, match="the validation split has no usable images"):
        labelled_from(ReaderOutput(train=[Sample(path, "a", str(path))], val=[]))


def test_txt_list_with_classes_file_end_to_end(tmp_path):
    for name in ("a", "b", "c"):
        image(tmp_path / "imgs" / f"{name}.png")
    (tmp_path / "train.txt").write_text("imgs/a.png 0\nimgs/b.png 1\n")
    (tmp_path / "test.txt").write_text("imgs/c.png 3\n")
    (tmp_path / "classes.txt").write_text("rose\ntulip\n")
    raw = {"data": {"reader": {"name": "txt_list", "options": {
        "train": "train.txt", "val": "test.txt", "classes": "classes.txt"}}}}
    with pytest.raises(TlzooError, match=r"test.txt:1: label 3 is out of range: there are 2 classes"):
        load_labelled(resolve_spec(raw, get_registry(), tmp_path))
    (tmp_path / "test.txt").write_text("imgs/c.png 1\n")
    data = load_labelled(resolve_spec(raw, get_registry(), tmp_path))
    assert data.classes == ["rose", "tulip"] and data.val == [(tmp_path / "imgs" / "c.png", 1)]
