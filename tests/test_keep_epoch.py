"""`train.keep`: which epoch's weights a run keeps, the best by `monitor` or the last."""

from __future__ import annotations

import math

import pytest
from safetensors.torch import load_file

from tlzoo.cli.run import best_line
from tlzoo.engine.state import TrainState
from tlzoo.registry import get_registry
from tlzoo.spec import load_spec

from support import TINY_CNN, make_image_folder, run_tiny, write_spec

pytestmark = pytest.mark.usefixtures("one_thread")


def model_tensors(path):
    """The model's weights in a checkpoint: last.safetensors also holds the optimizer's and the RNG's state."""
    return {key: value for key, value in load_file(path).items()
            if not key.startswith(("optimizer.", "rng.", "trust."))}


def test_keep_last_keeps_every_finite_epoch_and_early_stopping_still_counts_from_the_best():
    state = TrainState(None, None, None, monitor="val_top1", keep="last")
    assert state.is_kept(0.2) and state.is_kept(0.1) and not state.is_kept(math.nan) and not state.is_kept(None)
    best = TrainState(None, None, None, monitor="val_top1")
    best.best_metric = 0.5
    assert not best.is_kept(0.4) and best.is_kept(0.6)


def test_a_run_that_keeps_the_last_epoch_scores_and_saves_that_epoch(tmp_path):
    TINY_CNN.register()
    make_image_folder(tmp_path / "data", per_class=6, val_per_class=3, noise=90)
    changes = {"train": {"strategy": "head_only", "epochs": 6, "optimizer": {"name": "adamw", "lr": 0.05},
                         "scheduler": {"name": "cosine"}, "seed": 1}}
    best, best_metrics, _ = run_tiny(tmp_path, "best", **changes)
    last, last_metrics, _ = run_tiny(tmp_path, "last", **{**changes, "train": {**changes["train"], "keep": "last"}})
    assert [m["val_loss"] for m in best_metrics] == [m["val_loss"] for m in last_metrics]  # the same training
    assert best.summary["best_epoch"] < 6  # the best top-1 came before the end: the two rules differ here
    assert last.summary["best_epoch"] == 6 and last.summary["keep"] == "last"
    assert last.summary["best"]["val_loss"] == last_metrics[-1]["val_loss"]
    assert best.summary["best"]["val_loss"] == best_metrics[best.summary["best_epoch"] - 1]["val_loss"]
    kept, final = model_tensors(last.run_dir / "best.safetensors"), model_tensors(last.run_dir / "last.safetensors")
    assert kept and kept.keys() == final.keys() and all((kept[k] == final[k]).all() for k in kept)
    earlier = model_tensors(best.run_dir / "best.safetensors")
    assert any(not (earlier[k] == final[k]).all() for k in final)  # keep best saved another epoch's weights
    assert best_line(last.summary).startswith("kept the last epoch, 6/6: val top-1")
    assert best_line(best.summary).startswith(f"best epoch {best.summary['best_epoch']}/6: val top-1")


def test_keep_is_a_checked_spec_field(tmp_path):
    make_image_folder(tmp_path / "data")
    spec = write_spec(tmp_path, tmp_path / "data", train={"keep": "first"})
    with pytest.raises(Exception) as caught:
        load_spec(spec, get_registry())
    assert "train.keep" in str(caught.value) and "best" in str(caught.value)
