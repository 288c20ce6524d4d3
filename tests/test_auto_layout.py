"""`tlzoo train DATA`: what DATA is (every layout, tiny generated images), the one-line summary, the refusals."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from support import make_image_folder
from tlzoo.auto.layout import detect_layout, summary_line
from tlzoo.auto.train import read_data
from tlzoo.errors import TlzooError
from tlzoo.registry import get_registry


def flat_folder(root: Path, counts: dict[str, int]) -> Path:
    """One folder of class folders, `counts` noisy 8x8 PNGs per class."""
    rng = np.random.default_rng(len(counts))
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for number in range(count):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{number}.png")
    return root


def listed(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """A 3-class tree and a list of all its images in `kind` format ('txt' or 'csv'): (list, tree)."""
    tree = make_image_folder(tmp_path / "tree", classes=3, per_class=5, val_per_class=0, size=8)
    images = sorted((tree / "train").rglob("*.png"))
    path = tmp_path / f"labels.{kind}"
    if kind == "txt":
        path.write_text("".join(f"{image.relative_to(tmp_path)} {image.parent.name}\n" for image in images))
        (tmp_path / "indices.txt").write_text("".join(f"{image.relative_to(tmp_path)} {image.parent.name[-1]}\n"
                                                      for image in images))  # seed 001's format
    else:
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["filename", "Class"])
            writer.writerows([image.relative_to(tmp_path), image.parent.name] for image in images)
    return path, tree


def read(layout):
    return read_data(layout, get_registry(), lambda message: None)


def test_split_folders_with_val_and_test(tmp_path):
    make_image_folder(tmp_path / "data", classes=3, per_class=4, val_per_class=2, size=8)
    make_image_folder(tmp_path / "extra", classes=3, per_class=3, val_per_class=0, size=8, seed=1)
    (tmp_path / "extra" / "train").rename(tmp_path / "data" / "test")
    layout = detect_layout(tmp_path / "data")
    assert layout.kind == "split folders"
    assert layout.reader == {"name": "imagefolder", "options": {"root": str((tmp_path / "data").resolve()),
                                                                "train": "train", "val": "val"}}
    assert layout.test == "test" and layout.final_reader()["options"]["test"] == "test"
    data, load_s, test_count = read(layout)
    assert (len(data.train), len(data.val), data.test, test_count) == (12, 6, None, 9)
    assert load_s > 0
    line = summary_line(layout, data, test_count)
    assert "3 classes, 12 train / 6 val (from val/), 9 test" in line
    assert "smallest class 'class0' with 4 training images" in line


def test_split_folders_without_val_get_a_stratified_seeded_split(tmp_path):
    make_image_folder(tmp_path / "data", classes=2, per_class=10, val_per_class=0, size=8)
    for folder in (tmp_path / "data" / "val").iterdir():
        folder.rmdir()
    (tmp_path / "data" / "val").rmdir()
    layout = detect_layout(tmp_path / "data", seed=3)
    assert layout.reader["options"] == {"root": str((tmp_path / "data").resolve()), "train": "train",
                                        "val_split": 0.2, "seed": 3}
    data, _, test_count = read(layout)
    assert (len(data.train), len(data.val), test_count) == (16, 4, None)
    assert sorted(label for _, label in data.val) == [0, 0, 1, 1]  # stratified: 2 of each class
    again, _, _ = read(detect_layout(tmp_path / "data", seed=3))
    other, _, _ = read(detect_layout(tmp_path / "data", seed=4))
    assert again.val == data.val and other.val != data.val
    assert "no test split" in summary_line(layout, data, test_count)


def test_one_folder_of_class_folders(tmp_path):
    root = flat_folder(tmp_path / "photos", {"cats": 10, "dogs": 5, "owls": 6})
    layout = detect_layout(root, test=None, seed=0)
    assert layout.kind == "class folders"
    assert layout.reader["options"]["train"] == "." and layout.test is None
    data, _, _ = read(layout)
    assert data.classes == ["cats", "dogs", "owls"]
    assert (len(data.train), len(data.val)) == (17, 4)  # round(0.2 n) of each class: 2 + 1 + 1
    line = summary_line(layout, data, None)
    assert "a folder of class folders: 3 classes" in line and "smallest class 'dogs' with 4 training images" in line


def test_files_that_are_not_images_are_named_in_the_summary(tmp_path):
    root = flat_folder(tmp_path / "photos", {"cats": 5, "dogs": 5})
    for name in ("cats/clip.mp4", "cats/sub/clip2.MP4", "dogs/notes.txt", "dogs/Thumbs.db", "dogs/.DS_Store"):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(b"not an image")
    (root / "README.txt").write_text("beside the class folders, not in one")
    layout = detect_layout(root)
    data, _, _ = read(layout)
    assert len(data.train) + len(data.val) == 10 and not data.skipped
    assert summary_line(layout, data, None).endswith("; left out, not image files: 2 .mp4, 1 .txt")

    split = make_image_folder(tmp_path / "split", classes=2, per_class=4, val_per_class=2, size=8)
    (split / "train" / "class0" / "scan.pdf").write_bytes(b"%PDF")
    (split / "notes.md").write_text("x")
    (split / "train" / "labels.csv").write_text("x")  # in a split folder, not in a class folder
    layout = detect_layout(split)
    data, _, _ = read(layout)
    assert summary_line(layout, data, None).endswith("; left out, not image files: 1 .pdf")


def test_test_option_names_the_held_out_folder(tmp_path):
    root = flat_folder(tmp_path / "photos", {"a": 5, "b": 5})
    held = flat_folder(tmp_path / "held", {"a": 2, "b": 3})
    layout = detect_layout(root, test=held)
    assert layout.test == str(held.resolve())
    assert "test" not in layout.reader["options"]
    _, _, test_count = read(layout)
    assert test_count == 5
    (held / "zebra").mkdir()
    (held / "a" / "0.png").rename(held / "zebra" / "0.png")
    with pytest.raises(TlzooError, match="class 'zebra' in test is not in the class list"):
        read(layout)  # before any search, not after it


@pytest.mark.parametrize("kind", ["txt", "csv"])
def test_lists(tmp_path, kind):
    path, _ = listed(tmp_path, kind)
    layout = detect_layout(path, seed=1)
    assert layout.kind == ("txt list" if kind == "txt" else "csv")
    options = layout.reader["options"]
    assert options["train"] == str(path.resolve()) and options["val_split"] == 0.2 and options["seed"] == 1
    if kind == "csv":
        assert (options["path_column"], options["label_column"]) == ("filename", "Class")
    data, _, _ = read(layout)
    assert data.classes == ["class0", "class1", "class2"]
    assert (len(data.train), len(data.val)) == (12, 3)
    if kind == "txt":  # class names as labels are read as names; integers as seed 001's class indices
        assert options["labels"] == "names"
        indices = detect_layout(tmp_path / "indices.txt", seed=1)
        assert "labels" not in indices.reader["options"]
        assert read(indices)[0].classes == ["0", "1", "2"]


def test_a_csv_saved_by_a_spreadsheet_with_semicolons_is_read(tmp_path):
    path, _ = listed(tmp_path, "csv")
    rows = path.read_text().splitlines()
    path.write_text("\n".join(row.replace(",", ";") for row in rows) + "\n")
    layout = detect_layout(path)
    assert layout.reader["options"]["delimiter"] == ";"
    data, _, _ = read(layout)
    assert data.classes == ["class0", "class1", "class2"] and len(data.train) + len(data.val) == 15


def test_refusals_name_the_fix(tmp_path):
    one_class = flat_folder(tmp_path / "one", {"only": 6})
    with pytest.raises(TlzooError, match="holds one class \\('only'\\): a classifier needs at least two") as caught:
        read(detect_layout(one_class))
    assert "add a folder" in caught.value.hint

    lonely = flat_folder(tmp_path / "lonely", {"many": 6, "single": 1})
    with pytest.raises(TlzooError, match="class\\(es\\) with only one image: 'single'") as caught:
        read(detect_layout(lonely))
    assert "add images, or remove the class" in caught.value.hint

    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(TlzooError, match="no images found"):
        read(detect_layout(tmp_path / "empty"))

    loose = make_image_folder(tmp_path / "loose", classes=1, per_class=3, val_per_class=0, size=8)
    for image in (loose / "train" / "class0").iterdir():
        image.rename(tmp_path / image.name)
    (tmp_path / "bare").mkdir()
    for image in tmp_path.glob("*.png"):
        image.rename(tmp_path / "bare" / image.name)
    with pytest.raises(TlzooError, match="3 image\\(s\\) but no class folders") as caught:
        detect_layout(tmp_path / "bare")
    assert "sub-folder named after the class" in caught.value.hint

    make_image_folder(tmp_path / "noval", classes=2, per_class=2, val_per_class=2, size=8)
    (tmp_path / "noval" / "train").rename(tmp_path / "noval" / "elsewhere")
    with pytest.raises(TlzooError, match="has val/ but no train/ folder"):
        detect_layout(tmp_path / "noval")

    with pytest.raises(TlzooError, match="does not exist"):
        detect_layout(tmp_path / "missing")

    archive = tmp_path / "photos.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00" + bytes(40))
    with pytest.raises(TlzooError, match="photos.tar.gz is an archive") as caught:
        detect_layout(archive)
    assert caught.value.hint == ("unpack it first (tar -xf photos.tar.gz, or your archive tool) and pass the "
                                 "folder it holds")
    archive.rename(tmp_path / "photos.zip")
    with pytest.raises(TlzooError, match="photos.zip is an archive") as caught:
        detect_layout(tmp_path / "photos.zip")
    assert caught.value.hint.startswith("unpack it first (unzip photos.zip -d photos)")
    with pytest.raises(TlzooError, match="is one image"):
        detect_layout(next((tmp_path / "bare").glob("*.png")))

    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("image_name,kind\na.png,x\n")
    with pytest.raises(TlzooError, match="no path column") as caught:
        detect_layout(bad_csv)
    assert "name the columns 'path' and 'label'" in caught.value.hint


def test_a_class_with_one_training_image_and_its_own_validation_images_is_usable(tmp_path):
    """Only a class that cannot be both trained and validated (one image in all) is refused."""
    make_image_folder(tmp_path / "data", classes=2, per_class=1, val_per_class=2, size=8)
    data, _, _ = read(detect_layout(tmp_path / "data"))
    assert (len(data.train), len(data.val)) == (2, 4)


def test_data_refusals_name_what_tlzoo_train_users_can_change(tmp_path):
    """The data checks' hints name spec fields; tlzoo train sets those itself, so its own say what to do."""
    zipped = flat_folder(tmp_path / "zipped", {"cats": 4, "dogs": 4})
    (zipped / "__MACOSX" / "cats").mkdir(parents=True)
    (zipped / "__MACOSX" / "cats" / "._0.png").write_bytes(b"\x00\x05\x16\x07")  # AppleDouble: hidden, unread
    with pytest.raises(TlzooError, match="class\\(es\\) with no training images: __MACOSX") as caught:
        read(detect_layout(zipped))
    assert "remove their folders (__MACOSX is what a zip made on a Mac leaves" in caught.value.hint
    assert "data." not in caught.value.hint

    phone = flat_folder(tmp_path / "phone", {"cats": 4, "dogs": 4})
    for number in range(6):
        (phone / "cats" / f"IMG_{number}.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(32))
    with pytest.raises(TlzooError, match="6 of 14 files are bad, more than tlzoo train skips on its own "
                                         "\\(1% of them, or 5\\)") as caught:
        read(detect_layout(phone))
    assert "IMG_0.HEIC: a HEIC photo, which tlzoo cannot decode: convert it to JPEG" in caught.value.message
    assert caught.value.hint == "convert, fix or remove those files and run tlzoo train again"
    (phone / "cats" / "IMG_5.HEIC").unlink()  # 5 bad files are skipped, as a spec's defaults skip them
    data, _, _ = read(detect_layout(phone))
    assert len(data.skipped) == 5 and len(data.train) + len(data.val) == 8


def test_bad_test_files_are_refused_before_the_search_without_opening_a_test_image(tmp_path, monkeypatch):
    """Six HEIC photos in test/ stopped the final run after the whole search; now the names say it at once."""
    make_image_folder(tmp_path / "data", classes=3, per_class=4, val_per_class=2, size=8)
    make_image_folder(tmp_path / "extra", classes=3, per_class=3, val_per_class=0, size=8, seed=1)
    (tmp_path / "extra" / "train").rename(tmp_path / "data" / "test")
    test = tmp_path / "data" / "test"
    for number in range(5):
        (test / "class0" / f"IMG_{number}.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(32))
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *args, **kwargs: opened.append(Path(fp)) or real_open(fp, *args,
                                                                                                          **kwargs))
    _, _, test_count = read(detect_layout(tmp_path / "data"))  # five: skipped by the final run, as a spec's are
    assert test_count == 14
    (test / "class1" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(TlzooError, match="6 of 33 files are bad, more than tlzoo train skips on its own") as caught:
        read(detect_layout(tmp_path / "data"))
    assert "IMG_0.HEIC: a HEIC photo" in caught.value.message and "gone.png: missing file" in caught.value.message
    assert not [path for path in opened if test in path.parents]
