"""A held-out test split is scored with the best model; head_only on random weights is warned about."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reliability_support import cli_output, make_images, write_spec

pytestmark = pytest.mark.usefixtures("one_thread")


def data_with_test(tmp_path: Path) -> Path:
    root = make_images(tmp_path / "data", train=6, val=2)
    other = make_images(tmp_path / "other", train=1, val=3)  # different pixels: a split of its own
    shutil.move(str(other / "val"), str(root / "test"))
    return root


def test_best_model_is_scored_on_the_test_split_and_reported(tmp_path, capsys):
    root = data_with_test(tmp_path)
    spec = write_spec(tmp_path, root, train={"epochs": 3, "strategy": "head_only"},
                      data={"reader": {"name": "imagefolder",
                                       "options": {"root": str(root), "val": "val", "test": "test"}}})
    code, out, err = cli_output(capsys, "run", str(spec))
    assert code == 0, err
    run_dir = Path(next((tmp_path / "runs").iterdir()))
    summary = json.loads((run_dir / "summary.json").read_text())
    test = summary["test"]
    assert test["model"] == "best" and test["count"] == 9 and set(test["per_class_accuracy"]) == set(summary["classes"])
    assert "(9 held-out test images)" in err and "test: 9 held-out images scored with the best model" in err
    assert f"test top-1 {test['top1']:.4f} (9 held-out images)" in out.strip().splitlines()[-1]
    # the same figure as evaluating the best model on that folder afterwards
    code, out, err = cli_output(capsys, "evaluate", str(run_dir), "--data", str(root / "test"), "--json")
    assert code == 0, err
    assert json.loads(out)["top1"] == pytest.approx(test["top1"])
    assert summary["best"]["val_top1"] is not None  # the best epoch was still chosen on val


def test_a_run_without_test_split_has_no_test_entry(tmp_path, capsys):
    root = make_images(tmp_path / "data", train=3, val=1)
    code, out, err = cli_output(capsys, "run", str(write_spec(tmp_path, root, train={"epochs": 1})))
    assert code == 0, err
    summary = json.loads((next((tmp_path / "runs").iterdir()) / "summary.json").read_text())
    assert "test" not in summary and "test top-1" not in out


@pytest.mark.parametrize("weights, strategy, warned", [
    ("none", "head_only", True), ("pretrained", "head_only", False), ("none", "none", False)])
def test_head_only_on_random_weights_is_warned_about(tmp_path, capsys, weights, strategy, warned):
    root = make_images(tmp_path / "data", train=3, val=1)
    spec = write_spec(tmp_path, root, backbone={"weights": weights}, train={"epochs": 1, "strategy": strategy})
    code, _, err = cli_output(capsys, "run", str(spec))
    assert code == 0, err
    assert ("warning: strategy head_only with backbone.weights 'none'" in err) == warned, err
    assert ("HINT: use weights 'pretrained'" in err) == warned


def test_validate_warns_about_head_only_on_random_weights(tmp_path, capsys):
    root = make_images(tmp_path / "data", train=2, val=1)
    spec = write_spec(tmp_path, root, backbone={"weights": "none"}, train={"strategy": "head_only"})
    code, out, err = cli_output(capsys, "validate", str(spec))
    assert code == 0 and ": ok" in out, err
    assert "warning: strategy head_only with backbone.weights 'none'" in err and "HINT:" in err
    code, out, err = cli_output(capsys, "validate", str(write_spec(tmp_path, root, train={"strategy": "head_only"})))
    assert code == 0 and "warning" not in err
