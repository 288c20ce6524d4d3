"""`tlzoo train` end to end: on test/tiny_cnn in-process, and once through the CLI with a real short budget."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import pytest
from PIL import Image

import tlzoo.auto.search as search_module
from tlzoo.auto import fold_check, probing
import tlzoo.auto.train as train_module
from conftest import run_cli
from support import make_image_folder
from tlzoo.auto.train import train
from tlzoo.probe.ranking import Candidate
from tlzoo.runtime.interrupts import Interrupted

TINY_CANDIDATES = [Candidate("test/tiny_cnn", "shipped")]


def photos(root: Path, size: int = 32) -> Path:
    """train/ and val/ of 3 colour classes, and a test/ folder of their own images."""
    make_image_folder(root, classes=3, per_class=8, val_per_class=3, size=size)
    make_image_folder(root.parent / "held", classes=3, per_class=4, val_per_class=0, size=size, seed=5)
    (root.parent / "held" / "train").rename(root / "test")
    return root


def test_train_chooses_by_validation_reads_test_last_and_its_spec_reruns(tmp_path, tiny_backbone, one_thread,
                                                                          monkeypatch):
    data = photos(tmp_path / "data")
    test_images = {str(path.resolve()) for path in (data / "test").rglob("*.png")}
    opened: list[str] = []
    real_open, real_final = Image.open, train_module.run_spec

    def recording_open(fp, *args, **kwargs):
        opened.append(str(Path(fp).resolve()) if isinstance(fp, (str, Path)) else "<stream>")
        return real_open(fp, *args, **kwargs)

    def final_run_spec(*args, **kwargs):
        opened.append("FINAL RUN STARTS")
        return real_final(*args, **kwargs)

    monkeypatch.setattr(Image, "open", recording_open)
    monkeypatch.setattr(train_module, "run_spec", final_run_spec)
    stream = io.StringIO()
    result = train(data, "5m", TINY_CANDIDATES, output=tmp_path / "run", seed=0, stream=stream)
    log = stream.getvalue()

    start = opened.index("FINAL RUN STARTS")
    assert not test_images & set(opened[:start]), "a test image was read during the search"
    assert test_images <= set(opened[start:])  # scanned and scored by the final run
    run_dir = Path(result.run_dir)
    assert result.summary["test"]["count"] == 12

    decisions = json.loads((run_dir / "decisions.json").read_text())
    steps = [row["step"] for row in decisions["candidates"]]
    assert steps[:3] == ["speed", "probe", "head sweep"] and steps[-1] == "final choice"
    assert "fine-tune trial" in steps  # tiny_cnn has 3 groups: a top-2 trial ran (or says why not)
    assert all(row["reason"] for row in decisions["candidates"])
    assert decisions["final"]["test_top1"] == result.summary["test"]["top1"]
    assert decisions["final"]["within_budget"] is True
    assert "data: " in decisions["data"] and "held out until the end" in decisions["data"]
    assert "train [" in log and "final run:" in log and "done:" in log
    report = (run_dir / "report.html").read_text()
    assert "How this model was chosen" in report and "head sweep" in report

    spec = json.loads((run_dir / "spec.json").read_text())
    assert spec["data"]["reader"]["options"]["test"] == "test"
    chosen = decisions["chosen"]["strategy"]
    assert spec["train"]["strategy"] == ({"name": "head_only", "options": {}} if chosen == "head_only" else chosen)
    assert spec["train"].get("keep", "best") == ("last" if chosen == "head_only" else "best")
    assert (spec["train"]["epochs"], spec["train"]["optimizer"]["lr"]) == (decisions["chosen"]["epochs"],
                                                                          decisions["chosen"]["lr"])
    import tlzoo

    again = tlzoo.run(run_dir / "spec.json", output=tmp_path / "again")
    timeless = lambda best: {key: value for key, value in best.items() if key != "seconds"}  # noqa: E731
    assert timeless(again.summary["best"]) == timeless(result.summary["best"])
    assert again.summary["test"]["top1"] == result.summary["test"]["top1"]
    assert (tmp_path / "again" / "best.safetensors").read_bytes() == (run_dir / "best.safetensors").read_bytes()


@pytest.fixture
def scratch_parent(tmp_path, monkeypatch) -> Path:
    """The folder where tlzoo train's scratch folder (its trials) is made, to see what is left in it."""
    parent = tmp_path / "scratch"
    parent.mkdir()

    def scratch(suffix=None, prefix="tmp", dir=None):
        (parent / prefix).mkdir()
        return str(parent / prefix)

    monkeypatch.setattr(train_module.tempfile, "mkdtemp", scratch)
    return parent


def test_a_chosen_fine_tune_takes_over_its_trial_and_its_spec_reruns(tmp_path, tiny_backbone, one_thread,
                                                                     scratch_parent, monkeypatch):
    monkeypatch.setattr(search_module.Choice, "beaten_by", lambda *_: True)  # on this data the head wins otherwise
    monkeypatch.setattr(fold_check, "CHECK_BELOW", 0)  # no fold check (the next test has one)
    data = photos(tmp_path / "data")
    stream = io.StringIO()
    result = train(data, "5m", TINY_CANDIDATES, output=tmp_path / "run", seed=0, stream=stream)
    log = stream.getvalue()
    decisions = json.loads((Path(result.run_dir) / "decisions.json").read_text())
    assert decisions["chosen"]["strategy"] == {"name": "partial", "options": {"groups": 2}}
    assert decisions["final"]["took_over_trial"] is True
    final = log[log.index("final run:"):]
    assert "takes over its trial's epochs" in final and "taking over the 8 epoch(s) trained in" in final
    # the trial's lines are indented ("    | epoch 1/8"); the final run trains none, its refit does (9 val images)
    assert "epoch 1/8" not in final.replace("refit: epoch", "")
    assert result.summary["epochs_run"] == 8 and result.summary["test"]["count"] == 12
    refit = result.summary["refit"]
    assert refit["epoch"] == 8 and refit == decisions["final"]["refit"]  # all the epochs, whichever was kept
    assert refit["train_images"] == result.summary["num_train"] + result.summary["num_val"]
    assert "trains again, all its epochs, on the training and validation images together (train.refit)" in final
    # trials fit no calibration (the final run fits its own): the only trust lines are the final run's
    trials = log[:log.index("final run:")]
    assert "| trust: calibration and unknown detection are off" in trials and "| trust: temperature" not in trials
    assert result.summary["trust"]["calibration"]["method"] == "temperature" and "trust: temperature" in final
    assert not any(scratch_parent.iterdir())  # the trial went with the scratch folder
    import tlzoo

    again = tlzoo.run(Path(result.run_dir) / "spec.json", output=tmp_path / "again")
    assert again.summary["test"] == result.summary["test"]
    assert (tmp_path / "again" / "best.safetensors").read_bytes() == (tmp_path / "run" / "best.safetensors").read_bytes()


def test_the_fold_check_trains_on_other_folds_and_the_final_run_follows_it(tmp_path, tiny_backbone, one_thread,
                                                                          scratch_parent, monkeypatch):
    """On 9 validation images a chosen fine-tune is trained again beside the head on two other folds; whichever
    the check keeps is what the final run trains, and no fold's run is left behind."""
    monkeypatch.setattr(search_module.Choice, "beaten_by", lambda *_: True)
    data = photos(tmp_path / "data")
    stream = io.StringIO()
    result = train(data, "5m", TINY_CANDIDATES, output=tmp_path / "run", seed=0, stream=stream)
    decisions = json.loads((Path(result.run_dir) / "decisions.json").read_text())
    row = next(row for row in decisions["candidates"] if row["step"] == "fold check")
    assert row["seconds"] is not None and "(27 validation images)" in row["reason"]  # 9 of the search's, 2 x 9
    assert decisions["final"]["took_over_trial"] is row["kept"]
    assert decisions["chosen"]["strategy"] == ({"name": "partial", "options": {"groups": 2}} if row["kept"]
                                               else "head_only")
    assert "checking test/tiny_cnn, top 2 groups + head" in stream.getvalue()
    assert not any(scratch_parent.iterdir())


def test_the_same_command_makes_the_same_choices(tmp_path, tiny_backbone, one_thread):
    """The second command finds its features in the activation cache; it goes through the Python API."""
    import tlzoo

    data = photos(tmp_path / "data")
    first = train(data, "5m", TINY_CANDIDATES, output=tmp_path / "first", seed=4, stream=io.StringIO())
    second = tlzoo.train(data, time="5m", backbones="test/tiny_cnn", output=tmp_path / "second", seed=4)
    assert isinstance(second, tlzoo.RunResult) and second.best_epoch is not None
    made = []
    for decisions in (json.loads((Path(first.run_dir) / "decisions.json").read_text()), second.decisions):
        made.append((decisions["chosen"], [(row["step"], row["candidate"], row["val_top1"], row["kept"])
                                           for row in decisions["candidates"]]))
    assert made[0] == made[1]


def test_ctrl_c_during_the_search_stops_at_once_and_keeps_nothing(tmp_path, tiny_backbone, one_thread,
                                                                 scratch_parent, monkeypatch):
    data = photos(tmp_path / "data")

    def interrupted_features(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("Ctrl-C was not handled")

    monkeypatch.setattr(probing, "pooled_features", interrupted_features)
    with pytest.raises(Interrupted) as caught:
        train(data, "5m", TINY_CANDIDATES, output=tmp_path / "run", stream=io.StringIO())
    assert caught.value.exit_code == 130
    assert "during the search, before any model was chosen; nothing was kept" in str(caught.value)
    assert not (tmp_path / "run").exists() and not any(scratch_parent.iterdir())


def test_ctrl_c_in_the_final_run_leaves_a_resumable_run(tmp_path, tiny_backbone, one_thread, monkeypatch):
    data = photos(tmp_path / "data")

    class InterruptingHook(train_module.DeadlineHook):
        def __call__(self, trainer, record):
            if self.what == "final run" and record["epoch"] == 1:
                os.kill(os.getpid(), signal.SIGINT)  # saved and stopped at the next safe point
            super().__call__(trainer, record)

    monkeypatch.setattr(train_module, "DeadlineHook", InterruptingHook)
    with pytest.raises(Interrupted) as caught:
        train(data, "5m", TINY_CANDIDATES, output=tmp_path / "run", stream=io.StringIO())
    assert caught.value.exit_code == 130 and "--resume" in (caught.value.hint or "")
    assert (tmp_path / "run" / "last.safetensors").is_file() and (tmp_path / "run" / "decisions.json").is_file()
    import tlzoo

    resumed = tlzoo.run(tmp_path / "run" / "spec.json", resume=tmp_path / "run")
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert resumed.summary["epochs_run"] == spec["train"]["epochs"]
    assert (tmp_path / "run" / "summary.json").is_file()


def test_cli_refuses_what_cannot_be_trained(tmp_path):
    make_image_folder(tmp_path / "one", classes=1, per_class=4, val_per_class=0, size=8)
    result = run_cli("train", str(tmp_path / "one" / "train"), "--time", "1m", timeout=120)
    assert result.returncode == 2, result.stderr
    assert "tlzoo: error:" in result.stderr and "a classifier needs at least two" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_trains_within_a_real_short_budget(tmp_path):
    """EfficientNet-Lite0 on 45 tiny images: the whole command, interpreter start included, within 3 min + 10 %.

    It ends when its search is done (about 30 s on an idle 2-core machine); the budget leaves room for a
    loaded one (at load 12 on 2 cores, starting and measuring took 45 s and a pass ran at one image a second)."""
    data = photos(tmp_path / "data", size=48)
    started = time.monotonic()
    result = run_cli("train", str(data), "--time", "3m", "--backbones", "efficientnet_lite0",
                     "--output", str(tmp_path / "run"), timeout=300)
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert wall <= 198, f"took {wall:.1f} s"
    decisions = json.loads((tmp_path / "run" / "decisions.json").read_text())
    assert decisions["final"]["within_budget"] and decisions["chosen"]["backbone"] == "efficientnet_lite0"
    assert "decisions: " in result.stdout and "test top-1" in result.stdout
    # the chosen spec re-runs: test_train_chooses_by_validation_reads_test_last_and_its_spec_reruns (bitwise)
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert spec["backbone"]["name"] == "efficientnet_lite0" and spec["data"]["reader"]["options"]["test"] == "test"
