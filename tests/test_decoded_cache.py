"""The decoded-image cache: what it keeps, bit-identical samples, no decoding after the first pass."""

from __future__ import annotations

import gc
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tlzoo.model.backbone import DataConfig
from tlzoo.cache.decoded import decoded_dataset
from tlzoo.data.dataset import ImageDataset
from tlzoo.data.sample_errors import SampleError
from tlzoo.data.batches import SourceSetup
from tlzoo.engine.run import run_spec
from tlzoo.spec import load_spec
from tlzoo.data.transforms import build_eval_transform, build_train_transform
from tlzoo.registry import get_registry

from support import make_image_folder, write_spec

CONFIG = DataConfig(input_size=(3, 24, 24), crop_pct=0.875, interpolation="bilinear")


def jpegs(folder, sizes):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for index, (width, height) in enumerate(sizes):
        path = folder / f"{index}.jpg"
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path, quality=90)
        items.append((path, index % 2))
    return items


def dataset_for(tmp_path, items, transform, sizes=None, logs=None):
    setup = SourceSetup(items, transform, 4, 0, 0, shuffle=False)
    logs = [] if logs is None else logs
    return decoded_dataset(setup, sizes or {}, tmp_path / "decoded", logs.append, "train")


def test_leading_geometry_is_split_off_where_it_fixes_the_size():
    leading, size, _ = build_eval_transform(CONFIG).split_leading_geometry()
    assert [type(op).__name__ for op in leading] == ["Resize", "CenterCrop"] and size == (24, 24)
    leading, size, rest = build_train_transform("rotate_flip", CONFIG).split_leading_geometry()
    assert [type(op).__name__ for op in leading] == ["Resize"] and size == (300, 300)
    assert type(rest.image_part.transforms[0]).__name__ == "RandomRotation"
    leading, size, _ = build_train_transform("light", CONFIG).split_leading_geometry()
    assert leading == [] and size is None


@pytest.mark.parametrize("augment", ["none", "rotate_flip"])
def test_samples_are_bit_identical_and_later_epochs_decode_nothing(tmp_path, augment):
    items = jpegs(tmp_path / "img", [(40, 30), (32, 48), (30, 30)])
    transform = build_eval_transform(CONFIG) if augment == "none" else build_train_transform(augment, CONFIG)
    plain = ImageDataset(items, transform)
    cached = dataset_for(tmp_path, items, transform)
    for epoch in range(2):
        for index in range(len(items)):
            torch.manual_seed(epoch * 10 + index)
            expected = plain[index][0]
            torch.manual_seed(epoch * 10 + index)
            assert torch.equal(cached[index][0], expected)
    assert cached.slots.filled() == len(items)
    for path, _ in items:
        path.write_bytes(b"not a jpeg any more")  # a decode would now fail
    assert cached[0][0].shape == expected.shape


def test_worker_processes_fill_the_slots_the_main_process_reads(tmp_path):
    items = jpegs(tmp_path / "img", [(30, 30)] * 8)
    transform = build_eval_transform(CONFIG)
    cached = dataset_for(tmp_path, items, transform)
    loader = DataLoader(cached, batch_size=4, num_workers=2)
    first = torch.cat([x for x, _ in loader])
    assert cached.slots.filled() == 8
    for path, _ in items:
        path.unlink()
    assert torch.equal(torch.stack([cached[i][0] for i in range(8)]), first)


def test_random_first_op_keeps_images_at_their_measured_size(tmp_path):
    items = jpegs(tmp_path / "img", [(40, 30), (20, 50)])
    transform = build_train_transform("light", CONFIG)
    logs = []
    assert dataset_for(tmp_path, items, transform, logs=logs) is None
    assert "sizes are unknown" in logs[0]
    sizes = {path: Image.open(path).size for path, _ in items}
    cached = dataset_for(tmp_path, items, transform, sizes)
    assert [shape for shape in cached.slots.shapes] == [(30, 40, 3), (50, 20, 3)]
    plain = ImageDataset(items, transform)
    for index in range(2):
        torch.manual_seed(index)
        expected = plain[index][0]
        torch.manual_seed(index)
        assert torch.equal(cached[index][0], expected)


def test_random_first_op_keeps_large_photos_at_their_reduced_size(tmp_path):
    """`light` crops at least half the area to 24 px: a 400x300 photo is kept at 1/8, a 161x403 one at 1/4."""
    items = jpegs(tmp_path / "img", [(400, 300), (161, 403)])
    transform = build_train_transform("light", CONFIG)
    sizes = {path: Image.open(path).size for path, _ in items}
    cached = dataset_for(tmp_path, items, transform, sizes)
    assert cached.slots.shapes == [(38, 50, 3), (101, 41, 3)]  # 1/8 and 1/4
    plain = ImageDataset(items, transform)
    for index in range(2):
        torch.manual_seed(index)
        expected = plain[index][0]
        torch.manual_seed(index)
        assert torch.equal(cached[index][0], expected)
    assert cached.slots.filled() == 2  # each decoded image fitted its slot


def test_a_bad_file_is_named_and_the_file_goes_away_with_the_dataset(tmp_path):
    items = jpegs(tmp_path / "img", [(30, 30)])
    items[0][0].write_bytes(b"\xff\xd8 broken")
    cached = dataset_for(tmp_path, items, build_eval_transform(CONFIG))
    with pytest.raises(SampleError, match="0.jpg"):
        cached[0]
    path = cached.slots.path
    assert path.exists()
    del cached
    gc.collect()
    assert not path.exists()


def test_full_fine_tune_with_decoded_images_matches_a_run_without(tmp_path, tiny_backbone):
    make_image_folder(tmp_path / "data", classes=2, per_class=6)
    results = {}
    for name, enabled in (("plain", False), ("decoded", "auto")):
        folder = tmp_path / name
        folder.mkdir()
        spec = write_spec(folder, tmp_path / "data", train__strategy="none", train__epochs=2,
                          cache__enabled=enabled, cache__dir=str(tmp_path / "cache"))
        stream = io.StringIO()
        run = run_spec(load_spec(spec, get_registry()), stream=stream)
        results[name] = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
        if name == "decoded":
            assert "train images decoded once" in stream.getvalue()
    for a, b in zip(results["plain"], results["decoded"], strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
