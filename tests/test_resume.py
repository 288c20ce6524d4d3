"""`tlzoo run SPEC --resume RUN_DIR`: a run killed with SIGKILL ends exactly like one that never stopped."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch

from tlzoo.rundir.checkpoint import load_checkpoint
from tlzoo.errors import TlzooError
from tlzoo.engine.run import run_spec
from tlzoo.spec import load_spec
from tlzoo.registry import Component, get_registry

from reliability_support import TINY, build_tiny, cli, launch, make_images, register_tiny, wait_for, write_spec

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS_PER_EPOCH = 6  # 3 classes x 8 training images, batch 4


def without(value, keys=("seconds", "run_dir")):
    if isinstance(value, dict):
        return {k: without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [without(v, keys) for v in value]
    return value


def metrics(run_dir: Path, keys=("seconds", "run_dir")) -> list[dict]:
    return [without(json.loads(line), keys) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(run_dir: Path, reference: Path, keys=("seconds", "run_dir")) -> None:
    """Bitwise-equal best and last (model, optimizer and RNG state), metrics and summary."""
    for stem in ("best", "last"):
        ours, theirs = load_checkpoint(run_dir / stem)[0], load_checkpoint(reference / stem)[0]
        assert set(ours) == set(theirs), stem
        different = [name for name in ours if not torch.equal(ours[name], theirs[name])]
        assert different == [], f"{stem}: {different}"
    assert metrics(run_dir, keys) == metrics(reference, keys)
    summary = lambda d: without(json.loads((d / "summary.json").read_text()), keys)  # noqa: E731
    assert summary(run_dir) == summary(reference)


def test_kill_9_in_epoch_3_of_5_then_resume_gives_the_uninterrupted_result(tmp_path):
    register_tiny()
    spec = write_spec(tmp_path, make_images(tmp_path / "data"))  # 5 epochs, random augmentation, dropout
    reference = run_spec(load_spec(spec, get_registry()), tmp_path / "reference").run_dir  # in this process

    run_dir, marker = tmp_path / "killed", tmp_path / "paused"
    process = launch("run", str(spec), "--output", str(run_dir), wait=False,
                     env={"TLZOO_TEST_PAUSE_AT_STEP": str(2 * STEPS_PER_EPOCH + 3), "TLZOO_TEST_MARKER": str(marker)})
    wait_for(marker, process)
    assert marker.read_text() == f"2 {2 * STEPS_PER_EPOCH + 3}"  # 0-based epoch 2 = the third, mid-way
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert len(metrics(run_dir)) == 2
    stray = run_dir / ".last.safetensors.4242.0.tmp"  # what a kill during a save leaves behind
    stray.write_bytes(b"half a checkpoint")

    resumed = launch("run", str(spec), "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir} at epoch 3 (step {2 * STEPS_PER_EPOCH})" in resumed.stderr
    assert not stray.exists()
    assert_same_run(run_dir, reference)


# ---- in-process: what may and may not change -----------------------------------------------------

@pytest.fixture
def finished(tmp_path):
    """A 2-epoch run of the tiny backbone (scheduler none, so more epochs continue the same run)."""
    register_tiny()
    root = make_images(tmp_path / "data")
    spec = write_spec(tmp_path, root, train={"epochs": 2, "scheduler": {"name": "none"}})
    result = run_spec(load_spec(spec, get_registry()), tmp_path / "run")
    return spec, result.run_dir


def resume(spec: Path, run_dir: Path, *overrides: str, allow=(), stream=None):
    return run_spec(load_spec(spec, get_registry(), list(overrides)), resume=run_dir, allow_changes=allow,
                    stream=stream)


def test_resume_with_more_epochs_continues_like_a_longer_run(tmp_path, finished):
    spec, run_dir = finished
    recorded = (run_dir / "spec.json").read_bytes()
    with pytest.raises(TlzooError, match=r"train[.]epochs is 2 in the run and 4 in the spec(.|\n)*--allow-changes"):
        resume(spec, run_dir, "train.epochs=4")
    result = resume(spec, run_dir, "train.epochs=4", allow=("epochs",))
    assert (run_dir / "spec.json").read_bytes() == recorded  # the original record is never rewritten
    resumes = [json.loads(line) for line in (run_dir / "resumes.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["changes"]) for r in resumes] == [(2, {"train.epochs": {"run": 2, "now": 4}})]
    assert result.summary["epochs_run"] == 4 and len(metrics(run_dir)) == 4
    longer = run_spec(load_spec(spec, get_registry(), ["train.epochs=4"]), tmp_path / "longer")
    # the same run, except that epochs 1-2 were logged as "of 2" and the spec hash differs
    assert_same_run(run_dir, longer.run_dir, ("seconds", "run_dir", "epochs"))


def test_resume_with_ema_continues_the_average_like_a_longer_run(tmp_path):
    register_tiny()
    root = make_images(tmp_path / "data")
    ema = {"enabled": True, "decay": 0.9, "warmup": False}
    spec = write_spec(tmp_path, root, train={"epochs": 2, "scheduler": {"name": "none"}, "ema": ema})
    short = run_spec(load_spec(spec, get_registry()), tmp_path / "run")
    assert any(name.startswith("ema.") for name in load_checkpoint(short.run_dir / "last")[0])
    result = resume(spec, short.run_dir, "train.epochs=3", allow=("epochs",))
    longer = run_spec(load_spec(spec, get_registry(), ["train.epochs=3"]), tmp_path / "longer")
    assert [m["ema_val_loss"] for m in metrics(result.run_dir)] == [m["ema_val_loss"] for m in metrics(longer.run_dir)]
    assert_same_run(result.run_dir, longer.run_dir, ("seconds", "run_dir", "epochs"))


def test_a_second_writer_of_a_run_directory_is_refused_naming_the_first(finished, capsys):
    """Two resumes of one directory both appended epochs to metrics.jsonl; the second now stops at once."""
    spec, run_dir = finished
    longer = ["--allow-changes", "epochs", "--set", "train.epochs=4"]
    marker = run_dir.parent / "paused"
    first = launch("run", str(spec), "--resume", str(run_dir), *longer, wait=False,
                   env={"TLZOO_TEST_PAUSE_AT_STEP": str(2 * STEPS_PER_EPOCH + 2), "TLZOO_TEST_MARKER": str(marker)})
    try:
        wait_for(marker, first)
        code, err = cli(capsys, "run", str(spec), "--resume", str(run_dir), *longer)
        assert code == 2 and f"{run_dir} is being written by process {first.pid} (" in err, err
        assert "one run directory has one writer at a time" in err and "resuming" not in err
    finally:
        first.kill()
        first.communicate(timeout=30)
    assert [m["epoch"] for m in metrics(run_dir)] == [1, 2]  # the killed first writer had finished no epoch
    code, err = cli(capsys, "run", str(spec), "--resume", str(run_dir), *longer)  # its lock died with it
    assert code == 0, err
    assert [m["epoch"] for m in metrics(run_dir)] == [1, 2, 3, 4]


def test_resume_of_a_finished_run_says_it_is_complete_and_how_to_extend_it(finished, capsys):
    spec, run_dir = finished
    before = (run_dir / "last.safetensors").read_bytes()
    code, err = cli(capsys, "run", str(spec), "--resume", str(run_dir))
    assert code == 0, err
    assert f"{run_dir} is complete: all 2 epoch(s) are trained; nothing to resume" in err, err
    assert f"tlzoo run --resume {run_dir} --allow-changes epochs --set train.epochs=12" in err
    assert "resuming" not in err and len(metrics(run_dir)) == 2
    assert (run_dir / "last.safetensors").read_bytes() == before


def test_resume_of_an_early_stopped_run_says_why_nothing_trains(tmp_path, capsys):
    register_tiny()
    root = make_images(tmp_path / "data")
    spec = write_spec(tmp_path, root, train={"epochs": 30, "early_stopping": {"patience": 1, "min_delta": 0.5}})
    result = run_spec(load_spec(spec, get_registry()), tmp_path / "run")
    assert result.summary["stopped_early"]
    code, err = cli(capsys, "run", "--resume", str(result.run_dir))
    assert code == 0 and "is complete: it stopped early after epoch" in err and "early_stopping" in err, err


def test_resume_refuses_an_unrelated_spec_naming_every_field(tmp_path, finished, capsys):
    spec, run_dir = finished
    recorded = (run_dir / "spec.json").read_bytes()
    other = write_spec(tmp_path, tmp_path / "data", name="other.json",
                       train={"strategy": "head_only", "epochs": 3, "scheduler": {"name": "none"}},
                       data={"augment": "none"})
    other.write_text(json.dumps({**json.loads(other.read_text()), "name": "other"}))
    code, err = cli(capsys, "run", str(other), "--resume", str(run_dir))
    assert code == 2, err
    for field in ("name", "train.strategy.name", "train.epochs", "data.augment"):
        assert f"{field} is " in err, (field, err)
    assert "--allow-changes" in err and "Traceback" not in err
    assert (run_dir / "spec.json").read_bytes() == recorded and not (run_dir / "resumes.jsonl").exists()


def test_resume_without_a_spec_continues_from_the_run_directory_alone(tmp_path, finished, capsys):
    spec, run_dir = finished
    recorded = (run_dir / "spec.json").read_bytes()
    code, err = cli(capsys, "run", "--resume", str(run_dir), "--allow-changes", "epochs", "--set", "train.epochs=3")
    assert code == 0 and f"resuming {run_dir} at epoch 3" in err, err
    assert len(metrics(run_dir)) == 3 and (run_dir / "spec.json").read_bytes() == recorded
    code, err = cli(capsys, "run", "--resume", str(run_dir))  # its `last` now trained with 3 epochs
    assert code == 0 and "complete: all 3 epoch(s)" in err, err
    code, err = cli(capsys, "run", "--allow-changes", "epochs", str(spec))
    assert code == 2 and "--allow-changes applies to --resume only" in err, err


def test_last_with_training_state_still_serves_evaluate_and_predict(finished):
    from tlzoo.engine.inference import load_run

    _, run_dir = finished
    loaded = load_run(run_dir, get_registry(), "last")
    tensors = load_checkpoint(run_dir / "last")[0]
    assert torch.equal(loaded.model.state_dict()["head.1.weight"], tensors["head.1.weight"])
    assert any(name.startswith("optimizer.") for name in tensors)


@pytest.mark.parametrize("override, field", [
    ("backbone.weights=none", "backbone.weights"),
    ("head.dropout=0.1", "head.dropout"),
    ("head.hidden=8", "head.hidden"),
    ("train.optimizer.name=sgd", "train.optimizer.name"),
])
def test_resume_refuses_a_spec_that_changes_what_the_run_is(finished, override, field):
    spec, run_dir = finished
    before = (run_dir / "last.safetensors").read_bytes()
    with pytest.raises(TlzooError, match=rf"cannot resume .*{field.replace('.', '[.]')} is"):
        resume(spec, run_dir, override)
    assert (run_dir / "last.safetensors").read_bytes() == before


def test_resume_refuses_another_backbone_or_other_classes(tmp_path, finished):
    spec, run_dir = finished
    get_registry().catalog("backbones").add(Component("test/other_cnn", "another", build_tiny, plugin="tests"))
    with pytest.raises(TlzooError, match=r"backbone[.]name is \"test/reliability_cnn\" in the run and "
                                         r"\"test/other_cnn\" in the spec"):
        resume(spec, run_dir, "backbone.name=test/other_cnn")
    shutil.copytree(tmp_path / "data" / "train" / "class2", tmp_path / "data" / "train" / "class3")
    shutil.copytree(tmp_path / "data" / "val" / "class2", tmp_path / "data" / "val" / "class3")
    with pytest.raises(TlzooError, match=r"data \(data.reader\) now gives classes .*class3"):
        resume(spec, run_dir, "train.epochs=3", allow=("epochs",))  # a finished run would not read its data


def test_resume_errors_through_the_cli_exit_2(tmp_path, finished, capsys):
    spec, run_dir = finished
    code, err = cli(capsys, "run", str(spec), "--resume", str(run_dir), "--set", "train.optimizer.name=sgd")
    assert code == 2 and "train.optimizer.name" in err, err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = cli(capsys, "run", str(spec), "--resume", str(empty))
    assert code == 2 and "holds no last.safetensors" in err and "without --resume" in err, err
    code, err = cli(capsys, "run", str(spec), "--resume", str(run_dir), "--output", str(tmp_path / "x"))
    assert code == 2 and "--resume and --output" in err, err
    assert TINY in (run_dir / "last.json").read_text()


def test_resume_of_a_run_saved_before_newer_spec_fields_existed(finished):
    from tlzoo.rundir.checkpoint import save_checkpoint

    spec, run_dir = finished
    tensors, meta = load_checkpoint(run_dir / "last")
    saved = meta["training"]["spec"]
    del saved["loggers"]  # what a tlzoo without loggers and recipe features wrote
    for field in ("ema", "mix", "tta", "layer_decay"):
        del saved["train"][field]
    save_checkpoint(run_dir / "last", tensors, meta)
    result = resume(spec, run_dir, "train.epochs=3", allow=("epochs",))
    assert result.summary["epochs_run"] == 3


def test_resume_of_a_run_saved_before_specs_recorded_base_dir(finished):
    from tlzoo.rundir.checkpoint import save_checkpoint

    spec, run_dir = finished
    tensors, meta = load_checkpoint(run_dir / "last")
    del meta["training"]["spec"]["base_dir"]  # what an older tlzoo wrote; the sidecar's spec_dir says the same
    save_checkpoint(run_dir / "last", tensors, meta)
    result = resume(spec, run_dir, "train.epochs=3", allow=("epochs",))
    assert result.summary["epochs_run"] == 3
