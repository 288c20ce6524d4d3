"""A run that takes over a finished run's epochs (tlzoo.engine.adopt): what tlzoo train's final run does."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest

from tlzoo.engine.extras import RunExtras
from tlzoo.engine.run import run_spec
from tlzoo.errors import TlzooError
from tlzoo.registry import get_registry
from tlzoo.spec import load_spec

from support import TINY_CNN, make_image_folder, write_spec

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = {"strategy": {"name": "partial", "options": {"groups": 1}}, "epochs": 3, "seed": 2,
         "optimizer": {"name": "adamw", "lr": 0.01}, "scheduler": {"name": "cosine"}}


def data_with_test(root):
    make_image_folder(root, per_class=6, val_per_class=3, noise=70)
    make_image_folder(root.parent / "held", per_class=4, val_per_class=0, noise=70, seed=9)
    shutil.move(str(root.parent / "held" / "train"), str(root / "test"))
    return root


def timeless(value):
    """`value` without what differs between two runs of the same training: times and where they were written."""
    if isinstance(value, dict):
        return {key: timeless(item) for key, item in value.items() if key not in ("seconds", "run_dir", "trust")}
    return [timeless(item) for item in value] if isinstance(value, list) else value


def specs(tmp_path):
    """The trial's spec (no test split, report, calibration or unknown threshold) and the final run's (the test
    split added, the report on, calibration and threshold fitted)."""
    TINY_CNN.register()
    data = data_with_test(tmp_path / "data")
    trial = write_spec(tmp_path, data, "trial.json", train={**TRAIN, "calibration": "none", "unknown": "none"},
                       report={"enabled": False})
    final = json.loads(trial.read_text())
    final["data"]["reader"]["options"]["test"] = "test"
    final["report"] = {"enabled": True}
    del final["train"]["calibration"], final["train"]["unknown"]
    (tmp_path / "final.json").write_text(json.dumps(final))
    return trial, tmp_path / "final.json"


def test_a_final_run_takes_over_its_trial_and_equals_a_run_from_scratch(tmp_path):
    trial_spec, final_spec = specs(tmp_path)
    registry = get_registry()
    trial = run_spec(load_spec(trial_spec, registry), tmp_path / "trial", stream=io.StringIO())
    assert "test" not in trial.summary

    stream = io.StringIO()
    adopted = run_spec(load_spec(final_spec, registry), tmp_path / "adopted", stream=stream,
                       extras=RunExtras(adopt=tmp_path / "trial"))
    log = stream.getvalue()
    assert "taking over the 3 epoch(s) trained in" in log and "data.reader" in log
    assert "epoch 1/3" not in log  # nothing trained again
    scratch = run_spec(load_spec(final_spec, registry), tmp_path / "scratch", stream=io.StringIO())

    assert timeless(adopted.summary) == timeless(scratch.summary)
    assert "trust" not in trial.summary  # fitted by the run that takes over, as by a run from scratch:
    fitted = [run.summary["trust"]["calibration"]["temperature"] for run in (adopted, scratch)]
    assert fitted[0] == pytest.approx(fitted[1]) and adopted.summary["trust"]["unknown"]["threshold"] == \
        pytest.approx(scratch.summary["trust"]["unknown"]["threshold"])
    assert adopted.summary["test"]["count"] == 12 and adopted.summary["confusion_matrix"]
    assert adopted.summary["seconds"] > trial.summary["seconds"]  # its epochs' time is counted
    for name in ("best.safetensors", "last.safetensors", "spec.json"):
        assert (tmp_path / "adopted" / name).read_bytes() == (tmp_path / "scratch" / name).read_bytes(), name
    epochs = {run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("adopted", "scratch")}
    assert len(epochs["adopted"]) == 3 and timeless(epochs["adopted"]) == timeless(epochs["scratch"])
    tables = {run: list(csv.DictReader((tmp_path / run / "metrics.csv").open())) for run in ("adopted", "scratch")}
    assert [row["val_loss"] for row in tables["adopted"]] == [row["val_loss"] for row in tables["scratch"]]
    assert (tmp_path / "adopted" / "report.html").is_file() and not (tmp_path / "adopted" / "resumes.jsonl").exists()
    assert not (tmp_path / "trial" / "resumes.jsonl").exists()  # the trial is left as it was

    # the adopted run's last checkpoint is its own: a longer run resumes from it as from a trained one
    longer = run_spec(load_spec(final_spec, registry, ["train.epochs=4"]), stream=io.StringIO(),
                      resume=tmp_path / "adopted", allow_changes=("epochs",))
    assert longer.summary["epochs_run"] == 4


def test_a_run_that_differs_in_its_training_or_has_not_finished_is_not_taken_over(tmp_path):
    trial_spec, final_spec = specs(tmp_path)
    registry = get_registry()
    run_spec(load_spec(trial_spec, registry), tmp_path / "trial", stream=io.StringIO())
    other_lr = load_spec(final_spec, registry, ["train.optimizer.lr=0.02"])
    with pytest.raises(TlzooError) as caught:
        run_spec(other_lr, tmp_path / "other", stream=io.StringIO(), extras=RunExtras(adopt=tmp_path / "trial"))
    assert "train.optimizer.lr" in str(caught.value) and not (tmp_path / "other").exists()

    longer = load_spec(final_spec, registry, ["train.epochs=5"])
    with pytest.raises(TlzooError) as caught:
        run_spec(longer, tmp_path / "longer", stream=io.StringIO(), extras=RunExtras(adopt=tmp_path / "trial"))
    assert "train.epochs" in str(caught.value)


def test_ctrl_c_while_taking_over_stops_once_the_checkpoints_are_written(tmp_path, monkeypatch):
    import os
    import signal

    import tlzoo.engine.adopt as adopt_module
    from tlzoo.runtime.interrupts import Interrupted

    trial_spec, final_spec = specs(tmp_path)
    registry = get_registry()
    run_spec(load_spec(trial_spec, registry), tmp_path / "trial", stream=io.StringIO())
    real_save = adopt_module.save_checkpoint

    def interrupted_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # recorded: the handler waits for the safe point after the writes
        return real_save(*args, **kwargs)

    monkeypatch.setattr(adopt_module, "save_checkpoint", interrupted_save)
    with pytest.raises(Interrupted) as caught:
        run_spec(load_spec(final_spec, registry), tmp_path / "adopted", stream=io.StringIO(),
                 extras=RunExtras(adopt=tmp_path / "trial"))
    assert caught.value.exit_code == 130 and "while taking over" in caught.value.message
    assert "tlzoo evaluate" in caught.value.hint
    assert all((tmp_path / "adopted" / name).is_file() for name in ("best.safetensors", "last.safetensors"))
    assert not (tmp_path / "adopted" / "summary.json").exists()
