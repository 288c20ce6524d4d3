"""SIGTERM and Ctrl-C: a resumable checkpoint, the right exit code, nothing corrupted; NaN losses stop the run."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tlzoo.rundir.checkpoint import load_checkpoint
from tlzoo.errors import TlzooError
from tlzoo.runtime.interrupts import Interrupted, StopRequest

from reliability_support import HERE as SUPPORT
from reliability_support import launch, make_images, register_tiny, wait_for, write_spec

HANGING_SUPPORT = SUPPORT.parent / "stop_support.py"  # the same launcher, with a scan that hangs in a read

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the handler on its own ------------------------------------------------------------------

def test_signal_is_honoured_at_the_safe_point_with_128_plus_signal(capsys):
    saved = []
    with StopRequest() as stop:
        stop.armed = True
        stop.stop(lambda: saved.append("no") or "x", "at step 1")  # nothing requested: a no-op
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and saved == []  # the handler itself saves nothing
        with pytest.raises(Interrupted) as caught:
            stop.stop(lambda: saved.append("yes") or "checkpoint saved in last.safetensors", "at epoch 3, step 7")
    assert saved == ["yes"] and caught.value.exit_code == 143
    assert "SIGTERM at epoch 3, step 7; checkpoint saved in last.safetensors" in str(caught.value)
    assert "finishing the current step" in capsys.readouterr().err


def test_ctrl_c_exits_130_and_second_signal_stops_at_once_without_saving():
    with StopRequest() as stop:
        stop.armed = True
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(Interrupted) as caught:
            os.kill(os.getpid(), signal.SIGINT)
        assert caught.value.exit_code == 130 and "not saving" in str(caught.value)


def test_second_signal_during_the_save_abandons_it_and_never_reenters_it():
    calls = []

    def slow_save():
        calls.append("save")
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again while the checkpoint is being written
        calls.append("finished")  # never reached
        return "saved"

    with StopRequest() as stop:
        stop.armed = True
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(Interrupted, match="abandoning the checkpoint being written"):
            stop.stop(slow_save, "at step 2")
    assert calls == ["save"] and not stop.saving


def test_signal_before_training_stops_at_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        with pytest.raises(Interrupted, match="before training started; nothing to save") as caught:
            os.kill(os.getpid(), signal.SIGTERM)
        assert caught.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before


# ---- a real run in a subprocess ---------------------------------------------------------------

STEPS_PER_EPOCH = 6  # 3 classes x 8 training images, batch 4


def safetensors_equal(a, b) -> bool:
    ta, tb = load_checkpoint(a)[0], load_checkpoint(b)[0]
    return set(ta) == set(tb) and all(torch.equal(ta[k], tb[k]) for k in ta if not k.startswith("rng."))


@pytest.fixture
def tiny_spec(tmp_path):
    return write_spec(tmp_path, make_images(tmp_path / "data"), train={
        "strategy": "none", "epochs": 2, "optimizer": {"name": "adamw", "lr": 0.01},
        "scheduler": {"name": "cosine", "warmup_epochs": 1}, "precision": "fp32", "seed": 3})


def run_here(spec, output=None, resume=None):
    """`tlzoo run` in this process (same threads and code as the subprocess, less start-up time)."""
    from tlzoo.engine.run import run_spec
    from tlzoo.spec import load_spec
    from tlzoo.registry import get_registry

    register_tiny()
    return run_spec(load_spec(spec, get_registry()), output, resume=resume)


def test_sigterm_mid_epoch_exits_143_with_a_resumable_last_that_ends_like_an_uninterrupted_run(tmp_path, tiny_spec):
    run_here(tiny_spec, tmp_path / "reference")
    run_dir, marker = tmp_path / "stopped", tmp_path / "paused"
    process = launch("run", str(tiny_spec), "--output", str(run_dir), wait=False,
                     env={"TLZOO_TEST_PAUSE_AT_STEP": str(STEPS_PER_EPOCH + 2), "TLZOO_TEST_PAUSE_SECONDS": "1",
                          "TLZOO_TEST_MARKER": str(marker)})
    wait_for(marker, process)
    process.send_signal(signal.SIGTERM)  # arrives during step 8, in epoch 2
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "stopped by SIGTERM at epoch 2, step 8" in err and "Traceback" not in err
    _, meta = load_checkpoint(run_dir / "last")
    assert meta["training"]["counters"]["step"] == STEPS_PER_EPOCH + 2
    assert meta["training"]["position"]["batch"] == 2  # inside epoch 2

    run_here(tiny_spec, resume=run_dir)
    assert safetensors_equal(run_dir / "last", tmp_path / "reference" / "last")
    assert safetensors_equal(run_dir / "best", tmp_path / "reference" / "best")


def test_ctrl_c_mid_epoch_exits_130_with_a_resumable_last(tmp_path, tiny_spec):
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    process = launch("run", str(tiny_spec), "--output", str(run_dir), wait=False,
                     env={"TLZOO_TEST_PAUSE_AT_STEP": str(STEPS_PER_EPOCH + 1), "TLZOO_TEST_PAUSE_SECONDS": "1",
                          "TLZOO_TEST_MARKER": str(marker)})
    wait_for(marker, process)
    assert load_checkpoint(run_dir / "last")[1]["training"]["counters"]["step"] == STEPS_PER_EPOCH
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Ctrl-C (SIGINT)" in err and "resumable checkpoint saved" in err and "Traceback" not in err
    training = load_checkpoint(run_dir / "last")[1]["training"]
    assert (training["counters"]["step"], training["position"]["batch"]) == (STEPS_PER_EPOCH + 1, 1)


def test_ctrl_c_after_training_names_the_resume_that_finishes_the_run(tmp_path, tiny_spec, monkeypatch):
    """Between the last epoch and the report (test split, trust fit) the checkpoints are whole: the message says how
    to finish, and that resume trains nothing and writes what is missing."""
    import tlzoo.engine.run

    def interrupted_fit(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(2)  # the handler raises before this ends

    monkeypatch.setattr(tlzoo.engine.run, "fit_trust", interrupted_fit)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted) as caught:
        run_here(tiny_spec, run_dir)
    assert caught.value.exit_code == 130 and "after training" in str(caught.value)
    assert f"tlzoo run --resume {run_dir}" in caught.value.hint
    assert not (run_dir / "summary.json").exists() and (run_dir / "best.safetensors").is_file()
    monkeypatch.undo()
    steps = load_checkpoint(run_dir / "last")[1]["training"]["counters"]["step"]
    result = run_here(tiny_spec, resume=run_dir)
    assert (run_dir / "summary.json").is_file() and "trust" in result.summary
    assert result.summary["epochs_run"] == 2 and load_checkpoint(run_dir / "last")[1]["training"]["counters"][
        "step"] == steps


def test_a_run_killed_after_its_summary_and_before_its_report_is_finished_by_a_resume(tmp_path, monkeypatch):
    """SIGKILL between summary.json and report.html (in the findings, on a real flowers12 run) left a resume that
    said 'complete: nothing to resume' and never wrote the report; now the resume writes it, training nothing."""
    import tlzoo.engine.run

    spec = write_spec(tmp_path, make_images(tmp_path / "data"), report={"enabled": True}, train={
        "strategy": "none", "epochs": 2, "optimizer": {"name": "adamw", "lr": 0.01}, "precision": "fp32", "seed": 3})

    def killed(*args, **kwargs):
        raise SystemExit(137)  # what is on disk when the process dies here

    monkeypatch.setattr(tlzoo.engine.run, "report_after_run", killed)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit):
        run_here(spec, run_dir)
    assert (run_dir / "summary.json").is_file() and not (run_dir / "report.html").exists()
    monkeypatch.undo()
    steps = load_checkpoint(run_dir / "last")[1]["training"]["counters"]["step"]
    result = run_here(spec, resume=run_dir)
    assert (run_dir / "report.html").is_file() and result.summary["epochs_run"] == 2
    assert load_checkpoint(run_dir / "last")[1]["training"]["counters"]["step"] == steps
    mtime = (run_dir / "report.html").stat().st_mtime_ns
    run_here(spec, resume=run_dir)  # now complete: nothing is written again
    assert (run_dir / "report.html").stat().st_mtime_ns == mtime


def test_second_ctrl_c_while_saving_keeps_the_previous_checkpoints_whole(tmp_path, tiny_spec):
    run_dir, marker = tmp_path / "run", tmp_path / "saving"
    # epoch 1 writes best and last (4 renames); the 5th write, at the end of epoch 2, is slow
    process = launch("run", str(tiny_spec), "--output", str(run_dir), wait=False,
                     env={"TLZOO_TEST_SLOW_SAVE": "5", "TLZOO_TEST_SLOW_SAVE_FROM": "5",
                          "TLZOO_TEST_MARKER": str(marker)})
    wait_for(marker, process)
    best_before, last_before = load_checkpoint(run_dir / "best"), load_checkpoint(run_dir / "last")
    process.send_signal(signal.SIGINT)  # asks for a stop at the next safe point
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)  # and again, while the checkpoint is being written
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "abandoning the checkpoint being written" in err and "Traceback" not in err
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # the abandoned temporary is gone
    for stem, (tensors, meta) in (("best", best_before), ("last", last_before)):
        now_tensors, now_meta = load_checkpoint(run_dir / stem)
        assert now_meta == meta and all(torch.equal(now_tensors[k], tensors[k]) for k in tensors), stem


# ---- NaN ------------------------------------------------------------------------------------

def test_nan_loss_stops_within_one_step_naming_epoch_and_step(tmp_path, tiny_spec, monkeypatch):
    from tlzoo.engine.loop import Trainer

    original = Trainer.train_step

    def poisoned(self, batch, frozen_stages, epoch):
        if self.state.step + 1 == STEPS_PER_EPOCH + 3:  # epoch 2, step 9
            batch.x = batch.x * math.nan
        return original(self, batch, frozen_stages, epoch)

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    run_dir = tmp_path / "nan"
    with pytest.raises(TlzooError, match=r"loss became nan at epoch 2, step 9"):
        run_here(tiny_spec, run_dir)
    tensors, meta = load_checkpoint(run_dir / "last")
    assert meta["training"]["counters"]["epoch"] == 1  # the last good epoch, intact
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


def test_weights_that_diverge_without_a_nan_loss_are_never_written(tmp_path, tiny_spec, monkeypatch):
    from tlzoo.engine.loop import Trainer

    original = Trainer.train_step

    def diverging(self, batch, frozen_stages, epoch):
        value = original(self, batch, frozen_stages, epoch)
        if self.state.step + 1 == 2 * STEPS_PER_EPOCH:  # the last step of epoch 2: its loss was finite
            with torch.no_grad():
                self.state.model.head[-1].weight[0, 0] = math.inf
        return value

    monkeypatch.setattr(Trainer, "train_step", diverging)
    run_dir = tmp_path / "diverged"
    with pytest.raises(TlzooError, match=r"refused to write .*head.1.weight hold NaN or infinite values"):
        run_here(tiny_spec, run_dir)
    for stem in ("best", "last"):
        tensors, meta = load_checkpoint(run_dir / stem)
        assert meta["epoch"] == 1
        assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


def test_a_nan_metric_never_becomes_best():
    from torch import nn

    from tlzoo.engine.optim import Schedule
    from tlzoo.engine.state import TrainState
    from tlzoo.spec import SchedulerSpec

    model = nn.Linear(2, 2)
    for monitor, good in (("val_top1", 0.5), ("val_loss", 0.7)):
        state = TrainState(model, torch.optim.SGD(model.parameters(), lr=0.1), Schedule(SchedulerSpec(), 1, 1),
                           monitor=monitor)
        assert not state.is_improvement(math.nan) and not state.is_improvement(None)
        assert state.is_improvement(good)
        state.best_metric = good
        assert not state.is_improvement(math.nan) and not state.is_improvement(math.inf if monitor == "val_top1"
                                                                                else -math.inf)


# ---- signals to the process group, and outside the loop's safe points ----------------------------

def test_sigterm_to_the_process_group_with_loader_workers_exits_143_with_a_resumable_last(tmp_path):
    """`timeout`, `kill -- -PGID`, SLURM and Kubernetes signal every process of the group: the loader
    workers too. They must leave the decision to the main process (they used to die, and the run with them)."""
    spec = write_spec(tmp_path, make_images(tmp_path / "data"), data={
        "reader": {"name": "imagefolder", "options": {"root": str(tmp_path / "data"), "train": "train",
                                                      "val": "val"}},
        "batch_size": 4, "num_workers": 2, "augment": "light"},
        train={"strategy": "none", "epochs": 2, "optimizer": {"name": "adamw", "lr": 0.01},
               "scheduler": {"name": "cosine"}, "precision": "fp32", "seed": 3})
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    process = subprocess.Popen(
        [sys.executable, str(SUPPORT), "run", str(spec), "--output", str(run_dir)], start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TLZOO_TEST_PAUSE_AT_STEP": str(STEPS_PER_EPOCH + 2),
             "TLZOO_TEST_PAUSE_SECONDS": "1", "TLZOO_TEST_MARKER": str(marker)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(marker, process)
    os.killpg(process.pid, signal.SIGTERM)  # the main process and both loader workers
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "stopped by SIGTERM at epoch 2, step 8" in err and "Traceback" not in err and "killed by signal" not in err
    training = load_checkpoint(run_dir / "last")[1]["training"]
    assert (training["counters"]["step"], training["position"]["batch"]) == (STEPS_PER_EPOCH + 2, 2)
    result = run_here(spec, resume=run_dir)
    assert result.summary["epochs_run"] == 2


def test_sigterm_while_the_scan_hangs_in_a_read_stops_promptly_with_143(tmp_path):
    """Before training there is nothing to save: the signal stops the process at once, even though a scan
    thread is stuck in a read that never returns (it used to wait for it forever)."""
    spec = write_spec(tmp_path, make_images(tmp_path / "data", classes=2, train=2, val=1))
    fifo, marker = tmp_path / "stuck", tmp_path / "scanning"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [sys.executable, str(HANGING_SUPPORT), "run", str(spec), "--output", str(tmp_path / "run")],
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TLZOO_TEST_HANG_FIFO": str(fifo),
             "TLZOO_TEST_MARKER": str(marker)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(marker, process)
        time.sleep(0.3)  # every scan thread is now inside the blocking open
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, err
    assert time.monotonic() - sent < 20
    assert "stopped by SIGTERM before training started" in err and "Traceback" not in err


def test_an_armed_stop_with_no_safe_point_in_its_grace_period_stops_at_once():
    """Inside the loop a signal waits for the next safe point, but not forever: a cache build or a hung
    read between two safe points is cut short once the grace period is over."""
    with StopRequest(grace_floor=0.3) as stop:
        stop.armed = True
        stop.stop(lambda: "x", "at step 1")  # safe points 0.1 s apart: the grace stays at its floor
        time.sleep(0.1)
        stop.stop(lambda: "x", "at step 2")
        assert 0.3 <= stop.grace < 0.5
        os.kill(os.getpid(), signal.SIGTERM)
        started = time.monotonic()
        with pytest.raises(Interrupted, match="no safe point came within") as caught:
            time.sleep(10)  # no safe point comes
        assert time.monotonic() - started < 3
    assert caught.value.exit_code == 143


def test_a_safe_point_within_the_grace_period_saves_and_the_timer_does_nothing():
    with StopRequest(grace_floor=0.3) as stop:
        stop.armed = True
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(Interrupted, match="at step 3; saved"):
            stop.stop(lambda: "saved", "at step 3")
        time.sleep(0.6)  # the grace timer's moment passes: nothing more is raised


def test_loader_workers_ignore_the_stop_signals():
    code = ("import os, signal; from tlzoo.runtime.interrupts import ignore_stop_signals; ignore_stop_signals(0); "
            "os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGINT); print('alive')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "alive", done.stderr


def test_ctrl_c_where_no_run_is_guarded_exits_130_and_says_so(monkeypatch, capsys):
    """Typer turns the KeyboardInterrupt into a returned 130 (after training, as the report is written)."""
    import tlzoo.cli.schema
    from tlzoo.cli.main import main

    def interrupted(registry):
        raise KeyboardInterrupt

    monkeypatch.setattr(tlzoo.cli.schema, "spec_schema", interrupted)
    with pytest.raises(SystemExit) as caught:
        main(["schema"])
    assert caught.value.code == 130
    assert "stopped by Ctrl-C (SIGINT)" in capsys.readouterr().err


def test_ctrl_c_inside_a_decode_stops_the_command_and_is_not_taken_for_a_damaged_image(tmp_path, monkeypatch):
    """Outside training a signal raises at once, wherever the main thread is: here inside Pillow's decoder, whose
    failures load_rgb turns into BadImage (a skipped file)."""
    from PIL import Image

    from tlzoo.data.images import load_rgb

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.png")
    real_load = Image.Image.load

    def interrupted_load(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(2)  # the handler raises before this ends
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", interrupted_load)
    with pytest.raises(Interrupted) as caught:
        with StopRequest(what="during the scan"):
            load_rgb(tmp_path / "a.png", (0, 0, 0), None)
    assert caught.value.exit_code == 130 and "during the scan" in caught.value.message
