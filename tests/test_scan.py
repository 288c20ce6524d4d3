"""The scan before training: every bad-file kind is found with its path; skip, error, max_bad_fraction."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tlzoo.data.dataset import ImageDataset
from tlzoo.data.labelled import labelled_from
from tlzoo.data.sample_errors import SampleError
from tlzoo.data.skipped import write_skipped
from tlzoo.errors import TlzooError
from tlzoo.data.samples import Problem, ReaderOutput, Sample
from tlzoo.data.scan import check_image, scan_images


def jpeg_bytes(colour=(200, 30, 30), size=(32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def noisy_bytes(kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, kind)
    return buffer.getvalue()


def truncated(kind: str) -> bytes:
    """The first two thirds: past the headers, so Pillow opens it and fails only when decoding."""
    data = noisy_bytes(kind)
    return data[: len(data) * 2 // 3]


def good(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes())
    return path


def bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected reason prefix) for each kind of bad file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image at all")
    (folder / "cut.jpg").write_bytes(truncated("JPEG"))
    (folder / "cut.png").write_bytes(truncated("PNG"))
    (folder / "dir.jpg").mkdir()
    (folder / "broken.jpg").symlink_to(folder / "nowhere.jpg")
    return {
        "missing": (folder / "missing.jpg", "missing file"),
        "zero": (folder / "zero.jpg", "empty file (0 bytes)"),
        "text": (folder / "text.jpg", "not an image"),
        "truncated jpeg": (folder / "cut.jpg", "truncated or corrupt"),
        "truncated png": (folder / "cut.png", "truncated or corrupt"),
        "directory": (folder / "dir.jpg", "a directory"),
        "broken symlink": (folder / "broken.jpg", "missing file (or a broken symlink)"),
    }


def test_truncated_files_open_fine_but_fail_the_scan(tmp_path):
    kinds = bad_files(tmp_path)
    with Image.open(kinds["truncated jpeg"][0]) as image:  # why the scan must decode
        assert image.size == (64, 64)
    with Image.open(kinds["truncated png"][0]) as image:
        assert image.size == (64, 64)
    assert check_image(kinds["truncated png"][0]).problem.startswith("truncated or corrupt")
    assert check_image(kinds["truncated jpeg"][0]).problem.startswith("truncated or corrupt")


def test_each_bad_kind_is_reported_with_its_path(tmp_path):
    kinds = bad_files(tmp_path / "bad")
    fine = good(tmp_path / "fine.jpg")
    results = scan_images([path for path, _ in kinds.values()] + [fine])
    assert results[fine].problem is None and results[fine].size == (32, 32)
    for name, (path, reason) in kinds.items():
        assert results[path].problem is not None, name
        assert results[path].problem.startswith(reason), (name, results[path].problem)


def test_decompression_bomb(tmp_path, monkeypatch):
    Image.new("L", (64, 64)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels > 2 x limit: Pillow refuses
    assert check_image(tmp_path / "bomb.png").problem.startswith("decompression bomb refused")


def test_unreadable_file(tmp_path, monkeypatch):
    target = good(tmp_path / "locked.jpg")
    if os.geteuid() != 0:  # root reads anything; then simulate the refusal where the file is opened
        target.chmod(0)
    else:
        real_open = Image.open

        def refuse(fp, *args, **kwargs):
            if Path(fp) == target:
                raise PermissionError(13, "Permission denied", str(fp))
            return real_open(fp, *args, **kwargs)

        monkeypatch.setattr(Image, "open", refuse)
    try:
        assert check_image(target).problem == "unreadable file (permission denied)"
    finally:
        target.chmod(0o644)


def test_threaded_scan_matches_serial(tmp_path):
    paths = [good(tmp_path / f"{i}.jpg") for i in range(12)] + [path for path, _ in bad_files(tmp_path / "b").values()]
    assert scan_images(paths, workers=4) == scan_images(paths, workers=1)


def make_output(tmp_path: Path, bad: int, good_per_class: int = 10, origin_list: bool = False) -> ReaderOutput:
    train, val = [], []
    for name in ("a", "b"):
        for i in range(good_per_class):
            path = good(tmp_path / "train" / name / f"{i}.jpg")
            train.append(Sample(path, name, str(path)))
        path = good(tmp_path / "val" / name / "0.jpg")
        val.append(Sample(path, name, str(path)))
    kinds = list(bad_files(tmp_path / "train" / "bad").values())
    for number, (path, _) in enumerate(kinds[:bad], start=1):
        train.append(Sample(path, "a", f"{tmp_path}/train.txt:{number}" if origin_list else str(path)))
    return ReaderOutput(train=train, val=val)


def test_skip_leaves_bad_files_out_and_reports_them(tmp_path):
    data = labelled_from(make_output(tmp_path, bad=3, origin_list=True), "skip", max_bad_fraction=0.2)
    assert len(data.train) == 20 and len(data.val) == 2
    assert len(data.skipped) == 3
    assert data.skipped[0].origin == f"{tmp_path}/train.txt:1 ({tmp_path / 'train' / 'bad' / 'missing.jpg'})"
    assert all(path.exists() and path.stat().st_size > 0 for path, _ in data.train)
    assert data.sizes[data.train[0][0]] == (32, 32)


def test_error_mode_stops_on_the_first_bad_file(tmp_path):
    with pytest.raises(TlzooError) as caught:
        labelled_from(make_output(tmp_path, bad=1), "error", max_bad_fraction=1.0)
    message = str(caught.value)
    assert "data.bad_files is 'error'" in message and str(tmp_path / "train" / "bad" / "missing.jpg") in message


def test_above_max_bad_fraction_stops_before_training(tmp_path):
    output = make_output(tmp_path, bad=3)  # 3 of 25 inputs = 12%
    with pytest.raises(TlzooError) as caught:
        labelled_from(output, "skip", max_bad_fraction=0.1, tolerated_bad_files=2)
    assert "3 of 25 inputs (12.0%)" in str(caught.value) and "max_bad_fraction" in str(caught.value)
    assert len(labelled_from(output, "skip", max_bad_fraction=0.12, tolerated_bad_files=2).skipped) == 3
    # the floor: up to tolerated_bad_files are skipped whatever the fraction
    assert len(labelled_from(output, "skip", max_bad_fraction=0.1, tolerated_bad_files=3).skipped) == 3


def test_reader_problems_count_as_bad_inputs(tmp_path):
    output = make_output(tmp_path, bad=0)
    output.problems.append(Problem("train.txt:4", "label 'x' is not an integer class index"))
    with pytest.raises(TlzooError, match=r"train.txt:4: label 'x'"):
        labelled_from(output, "error")
    assert labelled_from(output, "skip", max_bad_fraction=0.1).skipped == output.problems


def test_class_emptied_by_skipping_is_an_error(tmp_path):
    output = make_output(tmp_path, bad=0, good_per_class=1)
    (tmp_path / "train" / "b" / "0.jpg").write_bytes(b"")
    with pytest.raises(TlzooError, match=r"no training images \(after skipping bad files\): b"):
        labelled_from(output, "skip", max_bad_fraction=1.0)


def test_write_skipped_is_readable(tmp_path):
    problems = [Problem("lists/train.txt:3 (img/a b.jpg)", "empty file (0 bytes)"), Problem("x.png", "missing file")]
    target = tmp_path / "run" / "skipped.txt"
    write_skipped(problems, target)
    lines = target.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# 2 input(s) skipped")
    assert lines[1:] == ["lists/train.txt:3 (img/a b.jpg)\tempty file (0 bytes)", "x.png\tmissing file"]
    assert not write_skipped([], tmp_path / "clean" / "skipped.txt")  # nothing skipped: no file
    assert not (tmp_path / "clean").exists()


def test_dataset_returns_tensor_and_label(tmp_path):
    path = good(tmp_path / "a.jpg")
    dataset = ImageDataset([(path, 3)], lambda image: torch.as_tensor(list(image.size)))
    tensor, label = dataset[0]
    assert label == 3 and tensor.tolist() == [32, 32]


def test_worker_failure_names_the_file_and_does_not_hang(tmp_path):
    from torchvision.transforms.functional import to_tensor

    paths = [good(tmp_path / f"{i}.jpg") for i in range(8)]
    held = good(tmp_path / "val.jpg")
    data = labelled_from(ReaderOutput(train=[Sample(p, "a", str(p)) for p in paths],
                                      val=[Sample(held, "a", str(held))]))
    broken = paths[5]
    broken.write_bytes(truncated("JPEG"))  # goes bad after the scan
    loader = DataLoader(ImageDataset(data.train, to_tensor), batch_size=2, num_workers=2, timeout=60)
    batches = iter(loader)
    started = time.monotonic()
    try:
        with pytest.raises(SampleError) as caught:
            for _ in batches:
                pass
        assert time.monotonic() - started < 60
    finally:
        # shut the workers down now: left to a gc cycle, torch 2.14 waits 5 s per worker
        batches._shutdown_workers()
    message = str(caught.value)
    assert str(broken) in message and "truncated or corrupt" in message
    assert "Traceback" not in message and "DataLoader worker" in message


def test_transform_failure_names_the_file(tmp_path):
    path = good(tmp_path / "a.jpg")

    def explode(image):
        raise ValueError("crop larger than image")

    with pytest.raises(SampleError, match=rf"{path}: transform failed: ValueError: crop larger than image"):
        ImageDataset([(path, 0)], explode)[0]
