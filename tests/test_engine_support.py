"""Helpers for the engine tests: a tiny CNN backbone registered for one test, tiny image folders.

Also checks the helpers themselves, so a broken helper fails here and not as
a puzzling failure elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tlzoo.model.backbone import Backbone, DataConfig, Pooled, Split, TransferModel, ClassifierHead
from tlzoo.registry import Component, get_registry

TINY = "test/tiny_cnn"
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 220, 40), (200, 60, 200), (40, 210, 210)]


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class TinyNet(nn.Module):
    """Three conv stages with BatchNorm and a 10-class classifier, like a miniature ResNet."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.layer1 = conv_bn(8, 16, 2)
        self.layer2 = conv_bn(16, 16, 2)
        self.pool = Pooled()
        self.classifier = nn.Linear(16, 10)

    def forward(self, x):
        return self.classifier(self.pool(self.layer2(self.layer1(self.stem(x)))))


def split_tiny(model: TinyNet) -> Split:
    stages = [model.stem, model.layer1, nn.Sequential(model.layer2, model.pool)]
    return Split(stages, [list(stage.parameters()) for stage in stages], 16)


def build_tiny(options, weights: str = "pretrained") -> Backbone:
    torch.manual_seed(1234)  # "pretrained" = the same fixed initial weights every time
    model = TinyNet()
    config = DataConfig(input_size=(3, 32, 32), crop_pct=1.0, interpolation="bilinear")
    return Backbone(model, config, "classifier", split_tiny, weights="test" if weights != "none" else "none")


@pytest.fixture
def tiny_backbone():
    """Register test/tiny_cnn in the (fresh, per-test) registry."""
    get_registry().catalog("backbones").add(Component(TINY, "tiny CNN for tests", build_tiny, plugin="tests"))
    yield TINY


@pytest.fixture
def tiny_model() -> TransferModel:
    backbone = build_tiny(None)
    return TransferModel(split_tiny(backbone.model), ClassifierHead(16, 3))


def make_image_folder(root: Path, classes: int = 3, per_class: int = 8, size: int = 32, val_per_class: int = 3,
                      seed: int = 0, noise: float = 40) -> Path:
    """train/ and val/ folders of PNGs: each class a noisy colour, so classes are learnable."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", val_per_class)):
        for index in range(classes):
            folder = root / split / f"class{index}"
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(count):
                base = np.array(COLOURS[index % len(COLOURS)], dtype=np.float32)
                pixels = np.clip(base + rng.normal(0, noise, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{number}.png")
    return root


def write_spec(folder: Path, root: Path, **overrides) -> Path:
    """A spec for test/tiny_cnn on `root` (an image folder), with sections overridden."""
    spec = {
        "name": "tiny",
        "backbone": {"name": TINY},
        "data": {"reader": {"name": "imagefolder", "options": {"root": str(root), "train": "train", "val": "val"}},
                 "batch_size": 8, "num_workers": 0, "augment": "none"},
        "train": {"strategy": "head_only", "epochs": 2, "optimizer": {"name": "adam", "lr": 0.01},
                  "scheduler": {"name": "none"}, "precision": "fp32", "seed": 7},
        "output": str(folder / "runs"),
        "report": {"enabled": False},  # seconds a run; the report's own tests switch it on
    }
    for dotted, value in overrides.items():
        keys = dotted.split("__")
        target = spec
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    path = folder / "spec.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def test_tiny_model_groups_follow_stages(tiny_model):
    assert tiny_model.num_groups == 4
    assert tiny_model.stage_group_end() == [1, 2, 3]
    assert tiny_model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_image_folder_helper_writes_every_split(tmp_path):
    root = make_image_folder(tmp_path / "data", classes=2, per_class=3, val_per_class=1)
    assert len(list((root / "train").glob("*/*.png"))) == 6
    assert len(list((root / "val").glob("*/*.png"))) == 2
