"""train.refit: the training again on train + val, all its epochs; the test split scores the last one's weights."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from reliability_support import cli_output, make_images, register_tiny, write_spec

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = {"epochs": 3, "strategy": "none", "keep": "last", "optimizer": {"name": "adamw", "lr": 0.01},
         "unknown": "knn"}


def data_with_test(tmp_path: Path) -> Path:
    root = make_images(tmp_path / "data", train=6, val=3)
    other = make_images(tmp_path / "other", train=1, val=3)  # other pixels: a split of its own
    shutil.move(str(other / "val"), str(root / "test"))
    return root


def reader(root: Path) -> dict:
    return {"name": "imagefolder", "options": {"root": str(root), "val": "val", "test": "test"}}


def model_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    from tlzoo.rundir.checkpoint import load_checkpoint
    from tlzoo.rundir.training_state import strip_training

    return strip_training(load_checkpoint(run_dir / "best")[0])


def run_in_process(spec_path: Path, output: Path, train_on_val: bool):
    """run_spec on `spec_path`'s spec, its training split the training then validation images when asked."""
    from tlzoo.data.labelled import load_labelled
    from tlzoo.engine.extras import RunExtras
    from tlzoo.engine.run import run_spec
    from tlzoo.registry import get_registry
    from tlzoo.spec import load_spec

    register_tiny()
    resolved = load_spec(spec_path, get_registry())
    data = load_labelled(resolved)
    if train_on_val:
        data = dataclasses.replace(data, train=list(data.train) + list(data.val))
    return run_spec(resolved, output, stream=io.StringIO(), extras=RunExtras(data=data))


@pytest.mark.parametrize("strategy", ["none", "head_only", {"name": "partial", "options": {"groups": 1}}])
def test_the_refitted_model_is_the_one_trained_on_both_splits_and_the_test_split_scores_it(tmp_path, capsys,
                                                                                          strategy):
    root = data_with_test(tmp_path)
    train = {**TRAIN, "strategy": strategy}  # head_only and partial train through the activation cache
    plain = write_spec(tmp_path, root, "plain.json", train=train, data={"reader": reader(root)})
    refit = write_spec(tmp_path, root, "refit.json", train={**train, "refit": True}, data={"reader": reader(root)})
    code, out, err = cli_output(capsys, "run", str(refit), "--output", str(tmp_path / "refit-run"),
                                "--set", "report.enabled=true")
    assert code == 0, err
    run_dir = tmp_path / "refit-run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["refit"]["epoch"] == 3 and summary["refit"]["train_images"] == 27  # 3 classes x (6 + 3)
    assert "refit: epoch 1-3 again on the 18 training and 9 validation images together" in err
    assert "then trained again, epochs 1-3 on 27 train + val images (train.refit); test top-1" in out
    assert "epochs 1-3 trained again on 27 train + val images" in (run_dir / "report.html").read_text()

    # the weights: those of a run trained on both splits, not those of the run on the training split
    both = run_in_process(plain, tmp_path / "both-run", train_on_val=True)
    first = run_in_process(plain, tmp_path / "plain-run", train_on_val=False)
    refitted = model_tensors(run_dir)
    assert all(torch.equal(refitted[name], value) for name, value in model_tensors(both.run_dir).items())
    assert not all(torch.equal(refitted[name], value) for name, value in model_tensors(first.run_dir).items())

    # validation figures and the temperature: the first model's, measured on images it had not seen
    assert summary["best"]["val_top1"] == pytest.approx(first.summary["best"]["val_top1"])
    assert summary["trust"]["calibration"]["temperature"] == pytest.approx(
        first.summary["trust"]["calibration"]["temperature"])
    assert summary["trust"]["unknown"]["threshold"] == pytest.approx(first.summary["trust"]["unknown"]["threshold"])
    assert "test" in summary["trust"]["calibration"] and summary["trust"]["unknown"]["test_images"] == 9

    # the test figure is the refitted model's, as `tlzoo evaluate` scores it afterwards
    assert summary["test"]["top1"] == pytest.approx(both.summary["test"]["top1"])
    code, out, err = cli_output(capsys, "evaluate", str(run_dir), "--data", str(root / "test"), "--json")
    assert code == 0, err
    assert json.loads(out)["top1"] == pytest.approx(summary["test"]["top1"])
    code, out, err = cli_output(capsys, "evaluate", str(run_dir))  # its own validation split: images it trained on
    assert code == 0 and "trained again on its validation images too (train.refit)" in err

    # the knn bank: the refitted model's features of its 27 training images
    from tlzoo.rundir.checkpoint import load_checkpoint

    meta = load_checkpoint(run_dir / "best")[1]
    assert meta["trust"]["unknown"]["tensors"]["bank"][0] == 27


def test_the_refit_trains_every_epoch_the_first_training_ran_not_only_up_to_the_kept_one(tmp_path, capsys):
    """No validation split is left to choose an epoch by: the refit keeps its last, whichever the first kept."""
    root = data_with_test(tmp_path)
    train = {**TRAIN, "epochs": 4, "keep": "best", "strategy": "head_only"}
    plain = write_spec(tmp_path, root, "plain.json", train={**train, "keep": "last"}, data={"reader": reader(root)})
    refit = write_spec(tmp_path, root, "refit.json", train={**train, "refit": True}, data={"reader": reader(root)})
    code, _, err = cli_output(capsys, "run", str(refit), "--output", str(tmp_path / "refit-run"))
    assert code == 0, err
    summary = json.loads((tmp_path / "refit-run" / "summary.json").read_text())
    assert summary["best_epoch"] < 4  # the first training kept an earlier epoch (the first of best val top-1)
    assert summary["refit"]["epoch"] == 4 and "refit: epoch 1-4 again" in err
    both = run_in_process(plain, tmp_path / "both-run", train_on_val=True)  # 4 epochs on both splits, the last
    refitted = model_tensors(tmp_path / "refit-run")
    assert all(torch.equal(refitted[name], value) for name, value in model_tensors(both.run_dir).items())


def test_a_run_stopped_after_its_refit_finishes_without_training_again(tmp_path, capsys):
    root = data_with_test(tmp_path)
    spec = write_spec(tmp_path, root, train={**TRAIN, "refit": True}, data={"reader": reader(root)})
    code, _, err = cli_output(capsys, "run", str(spec), "--output", str(tmp_path / "run"))
    assert code == 0, err
    run_dir = tmp_path / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    weights = (run_dir / "best.safetensors").read_bytes()
    for name in ("summary.json", "report.html"):  # as a kill between the refit and the summary leaves it
        (run_dir / name).unlink(missing_ok=True)
    code, _, err = cli_output(capsys, "run", "--resume", str(run_dir))
    assert code == 0, err
    assert "refit: done before (epoch 3, 27 images); not trained again" in err
    again = json.loads((run_dir / "summary.json").read_text())
    assert again["test"]["top1"] == summary["test"]["top1"] and again["refit"]["epoch"] == 3
    assert again["trust"]["calibration"]["temperature"] == summary["trust"]["calibration"]["temperature"]
    assert (run_dir / "best.safetensors").read_bytes() == weights


def test_refit_with_a_weight_average_is_refused_naming_both_fields(tmp_path, capsys):
    root = make_images(tmp_path / "data", train=3, val=1)
    spec = write_spec(tmp_path, root, train={"epochs": 1, "refit": True, "ema": {"enabled": True}})
    code, _, err = cli_output(capsys, "run", str(spec))
    assert code != 0
    assert "train.refit" in err and "train.ema" in err and "Traceback" not in err
