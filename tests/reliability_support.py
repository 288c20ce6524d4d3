"""Helpers for the reliability tests: a tiny backbone, tiny image folders, and a CLI launcher.

Run as a script (`python tests/reliability_support.py run SPEC ...`) it registers
the tiny backbone and runs the tlzoo CLI in this process, so that subprocess
tests (kill -9, SIGTERM) train the same tiny model. Test-only switches, read
from the environment by this launcher only (tlzoo itself has no test hooks):

- TLZOO_TEST_PAUSE_AT_STEP=N: after global step N, write TLZOO_TEST_MARKER and
  sleep TLZOO_TEST_PAUSE_SECONDS (default 600), so the test can kill or signal
  the process in the middle of an epoch.
- TLZOO_TEST_SLOW_SAVE=S: sleep S seconds inside checkpoint writes, after the data
  is on disk and before the rename, from the TLZOO_TEST_SLOW_SAVE_FROM-th write on
  (default 1), writing TLZOO_TEST_MARKER first (to signal a process while it saves).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from tlzoo.model.backbone import Backbone, DataConfig, Pooled, Split

TINY = "test/reliability_cnn"
HERE = Path(__file__).resolve()


class TinyNet(nn.Module):
    """Two conv stages with BatchNorm, and a classifier the transfer model replaces."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(6, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = Pooled()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.pool(self.body(self.stem(x))))


def split_tiny(model: TinyNet) -> Split:
    stages = [model.stem, nn.Sequential(model.body, model.pool)]
    return Split(stages, [list(stage.parameters()) for stage in stages], 8)


def build_tiny(options, weights: str = "pretrained") -> Backbone:
    generator_state = torch.get_rng_state()
    torch.manual_seed(99)  # "pretrained" = the same fixed weights every time
    model = TinyNet()
    torch.set_rng_state(generator_state)
    config = DataConfig(input_size=(3, 16, 16), crop_pct=1.0, interpolation="bilinear")
    return Backbone(model, config, "fc", split_tiny, weights="none" if weights == "none" else "test")


def use_one_thread() -> None:
    """Runs use one intra-op thread: on a shared 2-core machine two threads make these tiny
    models ~8x slower (each op waits for both cores). The subprocess launcher does the same,
    so in-process and subprocess runs stay bitwise comparable."""
    import tlzoo.runtime.device as runtime

    runtime.available_cpus = lambda: 1


@pytest.fixture
def one_thread(monkeypatch):
    import tlzoo.runtime.device as runtime

    threads = torch.get_num_threads()
    monkeypatch.setattr(runtime, "available_cpus", lambda: 1)
    yield
    torch.set_num_threads(threads)


def register_tiny() -> str:
    from tlzoo.registry import Component, get_registry

    catalog = get_registry().catalog("backbones")
    if TINY not in catalog:
        catalog.add(Component(TINY, "tiny CNN for reliability tests", build_tiny, plugin="tests"))
    return TINY


def make_images(root: Path, classes: int = 3, train: int = 8, val: int = 3, size: int = 16) -> Path:
    """root/{train,val}/classN/*.png: noisy colours, one per class, learnable in a few steps."""
    from test_engine_support import make_image_folder

    return make_image_folder(root, classes, per_class=train, size=size, val_per_class=val, noise=50)


def write_spec(folder: Path, root: Path, name: str = "spec.json", **sections) -> Path:
    """A spec for the tiny backbone on `root`; keyword `train={...}` etc. update sections."""
    spec = {
        "name": "tiny",
        "backbone": {"name": TINY},
        "head": {"dropout": 0.3},  # dropout: the torch RNG matters during training
        "data": {"reader": {"name": "imagefolder", "options": {"root": str(root), "train": "train", "val": "val"}},
                 "batch_size": 4, "num_workers": 0, "augment": "light"},
        "train": {"strategy": "none", "epochs": 5, "optimizer": {"name": "adamw", "lr": 0.01},
                  "scheduler": {"name": "cosine", "warmup_epochs": 1}, "precision": "fp32", "seed": 3},
        "cache": {"enabled": False},
        "output": str(folder / "runs"),
        "report": {"enabled": False},  # seconds a run; the report's own tests switch it on
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path = folder / name
    path.write_text(json.dumps(spec, indent=2))
    return path


def launch(*args: str, env: dict | None = None, wait: bool = True, timeout: float = 120):
    """Run this file as the tlzoo CLI in a fresh interpreter (Popen when wait is False)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    command = [sys.executable, str(HERE), *args]
    if not wait:
        return subprocess.Popen(command, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=timeout)


def cli(capsys, *args: str) -> tuple[int, str]:
    """Run the tlzoo CLI in this process (the tiny backbone registered); returns (exit code, stderr)."""
    from tlzoo.cli.main import main

    register_tiny()
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def wait_for(path: Path, process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"process ended ({process.returncode}) before {path.name}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.05)


def _install_test_switches() -> None:
    pause_at = int(os.environ.get("TLZOO_TEST_PAUSE_AT_STEP", "0"))
    pause_seconds = float(os.environ.get("TLZOO_TEST_PAUSE_SECONDS", "600"))
    slow_save = float(os.environ.get("TLZOO_TEST_SLOW_SAVE", "0"))
    slow_from = int(os.environ.get("TLZOO_TEST_SLOW_SAVE_FROM", "1"))
    marker = os.environ.get("TLZOO_TEST_MARKER", "")
    if pause_at:
        from tlzoo.engine.loop import Trainer

        original = Trainer.train_step

        def train_step(self, batch, frozen_stages, epoch):
            value = original(self, batch, frozen_stages, epoch)
            if self.state.step + 1 == pause_at:  # the loop counts the step right after this returns
                Path(marker).write_text(f"{epoch} {self.state.step + 1}")
                time.sleep(pause_seconds)
            return value

        Trainer.train_step = train_step
    if slow_save:
        import tlzoo.rundir.writing as writing

        writes = []

        class SlowOs:
            def __getattr__(self, name):
                return getattr(os, name)

            @staticmethod
            def replace(source, target):
                writes.append(target)
                if len(writes) >= slow_from:
                    Path(marker).write_text(f"saving {target}")
                    time.sleep(slow_save)
                os.replace(source, target)

        writing.os = SlowOs()


if __name__ == "__main__":
    register_tiny()
    use_one_thread()
    _install_test_switches()
    from tlzoo.cli.main import main

    main(sys.argv[1:])
