"""What the tests build runs from: tiny CNN backbones, tiny image folders, specs for them.

Two sizes of one tiny CNN are registered as backbones: `test/tiny_cnn` (three
stages, 32 px, head_only specs: the engine and cache tests) and
`test/reliability_cnn` (two stages, 16 px, whole-network specs with dropout and
augmentation, where the RNG matters: the resume, interrupt and determinism
tests). reliability_support.py binds the second for its tests and launches the
CLI with it. Fixtures that use these live in conftest.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from tlzoo.model.backbone import Backbone, DataConfig, Pooled, Split

COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 220, 40), (200, 60, 200), (40, 210, 210)]


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class TinyNet(nn.Module):
    """Conv stages with BatchNorm and a classifier the transfer model replaces, like a miniature ResNet.

    `stages` is (name, input channels, output channels, stride) for each stage; `head` names the classifier.
    """

    def __init__(self, stages=(("stem", 3, 8, 1), ("layer1", 8, 16, 2), ("layer2", 16, 16, 2)),
                 head: str = "classifier", classes: int = 10):
        super().__init__()
        self.stage_names = [name for name, *_ in stages]
        for name, cin, cout, stride in stages:
            self.add_module(name, conv_bn(cin, cout, stride))
        self.pool = Pooled()
        self.head_name = head
        self.add_module(head, nn.Linear(stages[-1][2], classes))

    def forward(self, x):
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return getattr(self, self.head_name)(self.pool(x))


def split_tiny(model: TinyNet) -> Split:
    """One stage a conv block, the pooling with the last one."""
    blocks = [getattr(model, name) for name in model.stage_names]
    stages = [*blocks[:-1], nn.Sequential(blocks[-1], model.pool)]
    return Split(stages, [list(stage.parameters()) for stage in stages], blocks[-1][0].out_channels)


@dataclass(frozen=True)
class TinyBackbone:
    """One registered size of TinyNet and the spec a test run of it starts from."""

    name: str
    stages: tuple
    head: str
    classes: int
    side: int
    seed: int  # "pretrained" = the same fixed weights every time
    spec: dict

    def build(self, options=None, weights: str = "pretrained") -> Backbone:
        generator_state = torch.get_rng_state()
        torch.manual_seed(self.seed)
        model = TinyNet(self.stages, self.head, self.classes)
        torch.set_rng_state(generator_state)  # building a backbone leaves the caller's RNG as it was
        config = DataConfig(input_size=(3, self.side, self.side), crop_pct=1.0, interpolation="bilinear")
        return Backbone(model, config, self.head, split_tiny, weights="none" if weights == "none" else "test")

    def register(self) -> str:
        """Add this backbone to the (per-test) registry, once."""
        from tlzoo.registry import Component, get_registry

        catalog = get_registry().catalog("backbones")
        if self.name not in catalog:
            catalog.add(Component(self.name, "tiny CNN for tests", self.build, plugin="tests"))
        return self.name


def _imagefolder(root: Path) -> dict:
    return {"name": "imagefolder", "options": {"root": str(root), "train": "train", "val": "val"}}


TINY_CNN = TinyBackbone(
    "test/tiny_cnn", (("stem", 3, 8, 1), ("layer1", 8, 16, 2), ("layer2", 16, 16, 2)), "classifier", 10, 32, 1234,
    {"name": "tiny", "data": {"batch_size": 8, "num_workers": 0, "augment": "none"},
     "train": {"strategy": "head_only", "epochs": 2, "optimizer": {"name": "adam", "lr": 0.01},
               "scheduler": {"name": "none"}, "precision": "fp32", "seed": 7},
     "report": {"enabled": False}})  # a report costs seconds a run; the report's own tests switch it on
RELIABILITY_CNN = TinyBackbone(
    "test/reliability_cnn", (("stem", 3, 6, 2), ("body", 6, 8, 2)), "fc", 5, 16, 99,
    {"name": "tiny", "head": {"dropout": 0.3},  # dropout: the torch RNG matters during training
     "data": {"batch_size": 4, "num_workers": 0, "augment": "light"},
     "train": {"strategy": "none", "epochs": 5, "optimizer": {"name": "adamw", "lr": 0.01},
               "scheduler": {"name": "cosine", "warmup_epochs": 1}, "precision": "fp32", "seed": 3},
     "cache": {"enabled": False}, "report": {"enabled": False}})

TINY = TINY_CNN.name
build_tiny = TINY_CNN.build


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


def make_images(root: Path, classes: int = 3, train: int = 8, val: int = 3, size: int = 16) -> Path:
    """make_image_folder at the reliability backbone's size and a little more noise."""
    return make_image_folder(root, classes, per_class=train, size=size, val_per_class=val, noise=50)


def write_spec(folder: Path, root: Path, name: str = "spec.json", tiny: TinyBackbone = TINY_CNN,
               **changes) -> Path:
    """A spec for the `tiny` backbone on the image folder `root`, written to folder/name.

    `section__key=value` sets one nested value; `section={...}` updates a section's keys
    (other values replace the section).
    """
    spec = json.loads(json.dumps(tiny.spec))
    spec["backbone"] = {"name": tiny.name}
    spec["data"]["reader"] = _imagefolder(root)
    spec["output"] = str(folder / "runs")
    for key, value in changes.items():
        if "__" in key:
            *path, last = key.split("__")
            target = spec
            for part in path:
                target = target.setdefault(part, {})
            target[last] = value
        elif isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path = folder / name
    path.write_text(json.dumps(spec, indent=2))
    return path


def run_tiny(tmp_path: Path, name: str, **changes):
    """run_spec on write_spec(tmp_path/name, tmp_path/"data", **changes): (result, metrics lines, the run's log)."""
    import io

    from tlzoo.engine.run import run_spec
    from tlzoo.registry import get_registry
    from tlzoo.spec import load_spec

    folder = tmp_path / name
    folder.mkdir()
    spec = write_spec(folder, tmp_path / "data", **changes)
    stream = io.StringIO()
    result = run_spec(load_spec(spec, get_registry()), stream=stream)
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    return result, metrics, stream.getvalue()
