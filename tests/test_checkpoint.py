"""Checkpoint files: atomic safetensors + JSON pairs, and the full training state they carry."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from tlzoo.rundir import checkpoint, writing
from tlzoo.rundir.checkpoint import (TMP_SUFFIX, clean_stale_temporaries, load_checkpoint, save_checkpoint)
from tlzoo.engine.optim import Schedule
from tlzoo.engine.state import TrainState
from tlzoo.errors import TlzooError, WeightsError
from tlzoo.spec import SchedulerSpec
from tlzoo.rundir.training_state import (EpochPosition, restore_training_state, strip_training,
                                            training_checkpoint)


def tensors(value: float) -> dict[str, torch.Tensor]:
    return {"a": torch.full((3, 2), value), "b": torch.arange(4)}


def temporaries(folder):
    return [p for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX)]


def test_pair_round_trips_and_leaves_no_temporaries(tmp_path):
    save_checkpoint(tmp_path / "last", tensors(1.5), {"epoch": 2, "classes": ["x", "y"]})
    loaded, meta = load_checkpoint(tmp_path / "last")
    assert torch.equal(loaded["a"], torch.full((3, 2), 1.5)) and torch.equal(loaded["b"], torch.arange(4))
    assert meta["epoch"] == 2 and meta["classes"] == ["x", "y"]
    assert json.loads((tmp_path / "last.json").read_text())["classes"] == ["x", "y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]


def test_failed_rename_keeps_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "last", tensors(1.0), {"epoch": 1})

    def broken_replace(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writing.os, "replace", broken_replace)
    with pytest.raises(TlzooError, match=r"cannot write .*last.safetensors: No space left on device; "
                                         r"the previous last.safetensors is kept"):
        save_checkpoint(tmp_path / "last", tensors(2.0), {"epoch": 2})
    monkeypatch.undo()
    loaded, meta = load_checkpoint(tmp_path / "last")
    assert torch.equal(loaded["a"], torch.full((3, 2), 1.0)) and meta["epoch"] == 1
    assert temporaries(tmp_path) == []


def test_interrupt_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    """A second Ctrl-C raising inside the write: the temporary goes, the old file stays."""
    save_checkpoint(tmp_path / "best", tensors(1.0), {"epoch": 1})
    real_fsync = os.fsync

    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(writing.os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "best", tensors(2.0), {"epoch": 2})
    monkeypatch.setattr(writing.os, "fsync", real_fsync)
    loaded, meta = load_checkpoint(tmp_path / "best")
    assert torch.equal(loaded["a"], torch.full((3, 2), 1.0)) and meta["epoch"] == 1
    assert temporaries(tmp_path) == []


def test_process_killed_during_write_leaves_previous_loadable_and_stray_is_cleaned(tmp_path):
    save_checkpoint(tmp_path / "last", tensors(1.0), {"epoch": 1})
    # a child process dies abruptly after writing the new data, before the rename
    script = textwrap.dedent(f"""
        import os, torch
        from tlzoo.rundir import checkpoint
        os.fsync = lambda fd: os._exit(9)
        checkpoint.save_checkpoint({str(tmp_path / 'last')!r}, {{"a": torch.full((3, 2), 2.0)}}, {{"epoch": 2}})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 9, result.stderr
    stray = temporaries(tmp_path)
    assert len(stray) == 1 and stray[0].stat().st_size > 0
    loaded, meta = load_checkpoint(tmp_path / "last")
    assert torch.equal(loaded["a"], torch.full((3, 2), 1.0)) and meta["epoch"] == 1
    assert clean_stale_temporaries(tmp_path) == stray
    assert temporaries(tmp_path) == [] and (tmp_path / "last.safetensors").exists()


def test_crash_between_weights_and_sidecar_uses_the_metadata_inside_the_weights(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "last", tensors(1.0), {"epoch": 1})
    real_write, calls = checkpoint.atomic_write, []

    def dies_on_second_file(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("crash")
        real_write(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write", dies_on_second_file)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "last", tensors(2.0), {"epoch": 2})
    assert json.loads((tmp_path / "last.json").read_text())["epoch"] == 1  # the stale sidecar
    loaded, meta = load_checkpoint(tmp_path / "last")
    assert torch.equal(loaded["a"], torch.full((3, 2), 2.0)) and meta["epoch"] == 2  # consistent pair


def test_non_finite_tensors_are_never_written(tmp_path):
    save_checkpoint(tmp_path / "last", tensors(1.0), {"epoch": 1})
    bad = tensors(1.0)
    bad["a"][0, 0] = float("nan")
    with pytest.raises(TlzooError, match=r"tensor\(s\) a hold NaN"):
        save_checkpoint(tmp_path / "last", bad, {"epoch": 2})
    bad["a"][0, 0] = float("inf")
    with pytest.raises(TlzooError, match="infinite"):
        save_checkpoint(tmp_path / "last", bad, {"epoch": 2})
    assert load_checkpoint(tmp_path / "last")[1]["epoch"] == 1


def test_metadata_nan_becomes_null_and_sidecar_only_pairs_load(tmp_path):
    save_checkpoint(tmp_path / "x", tensors(0.0), {"val_loss": float("nan"), "top1": float("inf")})
    assert load_checkpoint(tmp_path / "x")[1]["val_loss"] is None
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(WeightsError, match="plain.json is missing"):
        load_checkpoint(tmp_path / "plain")
    (tmp_path / "plain.json").write_text('{"epoch": 4}')
    assert load_checkpoint(tmp_path / "plain")[1] == {"epoch": 4}


def test_clean_stale_temporaries_removes_only_temporaries(tmp_path):
    keep = [tmp_path / "last.safetensors", tmp_path / "metrics.jsonl", tmp_path / "notes.tmpl"]
    stray = [tmp_path / ".last.safetensors.123.0.tmp", tmp_path / "summary.json.tmp"]
    for path in keep + stray:
        path.write_bytes(b"x")
    assert sorted(clean_stale_temporaries(tmp_path)) == sorted(stray)
    assert sorted(tmp_path.iterdir()) == sorted(keep)


# ---- the training state ----------------------------------------------------------------------

def make_state(optimizer: str = "adamw", seed: int = 0) -> TrainState:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 3))
    groups = [{"params": list(model[0].parameters()) + list(model[1].parameters()), "lr": 0.01, "base_lr": 0.01},
              {"params": list(model[3].parameters()), "lr": 0.1, "base_lr": 0.1}]
    opt = (torch.optim.SGD(groups, momentum=0.9, nesterov=True) if optimizer == "sgd"
           else torch.optim.AdamW(groups))
    return TrainState(model, opt, Schedule(SchedulerSpec(name="cosine"), 4, 5))


def train_steps(state: TrainState, steps: int) -> None:
    state.model.train()
    for _ in range(steps):
        x = torch.randn(8, 4) + random.random() + float(np.random.rand())
        loss = state.model(x).logsumexp(1).mean()
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
        state.step += 1


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_training_state_round_trip_continues_bitwise(tmp_path, optimizer):
    original = make_state(optimizer)
    train_steps(original, 3)
    original.epoch, original.best_metric, original.best_epoch, original.bad_epochs = 1, 0.75, 1, 2
    original.history = [{"epoch": 1, "val_top1": 0.75, "val_loss": float("nan")}]
    loader = torch.Generator().manual_seed(42)
    loader.manual_seed(5)
    saved_tensors, training = training_checkpoint(original, {"train": {"seed": 1}}, None, loader)
    save_checkpoint(tmp_path / "last", saved_tensors, {"classes": ["a", "b", "c"], "training": training})

    train_steps(original, 2)  # the uninterrupted continuation

    tensors, meta = load_checkpoint(tmp_path / "last")
    assert any(name.startswith("optimizer.") for name in tensors)  # optimizer tensors in safetensors
    assert "param_groups" in meta["training"]["optimizer"]  # and the rest in JSON
    resumed = make_state(optimizer, seed=1)  # different initial weights and RNG, to be overwritten
    fresh_loader = torch.Generator()
    restore_training_state(resumed, tensors, meta["training"], "last", fresh_loader)
    assert (resumed.epoch, resumed.step, resumed.best_metric, resumed.bad_epochs) == (1, 3, 0.75, 2)
    assert resumed.history[0]["val_top1"] == 0.75 and resumed.history[0]["val_loss"] is None
    assert torch.equal(fresh_loader.get_state(), loader.get_state())
    train_steps(resumed, 2)  # the same RNG draws, the same optimizer moments
    for (name, a), b in zip(original.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(original.optimizer.state.values(), resumed.optimizer.state.values()):
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key


def test_model_tensors_keep_their_names_so_predict_can_read_last():
    state = make_state()
    train_steps(state, 1)
    tensors, _ = training_checkpoint(state, {}, None)
    assert set(strip_training(tensors)) == set(state.model.state_dict())
    assert {n.split(".")[0] for n in set(tensors) - set(state.model.state_dict())} == {"optimizer", "rng"}


def test_restore_refuses_other_optimizer_and_mismatched_tensors(tmp_path):
    state = make_state("adamw")
    train_steps(state, 1)
    tensors, training = training_checkpoint(state, {}, None)
    with pytest.raises(TlzooError, match="train.optimizer.name"):
        restore_training_state(make_state("sgd"), tensors, training, "last.safetensors")
    wrong = dict(tensors, **{"0.weight": torch.zeros(6, 5)})
    with pytest.raises(WeightsError, match=r"'0.weight' is torch.float32 \(6, 5\)"):
        restore_training_state(make_state(), wrong, training, "last.safetensors")
    wrong = dict(tensors, **{"1.num_batches_tracked": torch.zeros((), dtype=torch.float32)})
    with pytest.raises(WeightsError, match="num_batches_tracked"):
        restore_training_state(make_state(), wrong, training, "last.safetensors")
    with pytest.raises(WeightsError, match="not a tlzoo training checkpoint"):
        restore_training_state(make_state(), tensors, {"epoch": 3}, "best.safetensors")


def test_epoch_position_restores_rng_and_loss_so_far():
    state = make_state()
    train_steps(state, 1)
    position = EpochPosition.capture(batch=2, loss_total=3.25, loss_count=8)
    tensors, training = training_checkpoint(state, {}, position)
    expected = (torch.rand(3), random.random(), np.random.rand())
    restored = EpochPosition.from_checkpoint(tensors, json.loads(json.dumps(training)))
    assert restored.batch == 2
    assert restored.restore() == (3.25, 8)
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]


def test_full_disk_during_a_run_is_a_clean_error_naming_the_file_and_exit_2(tmp_path, monkeypatch, capsys):
    """ENOSPC from fsync on the third checkpoint write: `tlzoo: error:`, the file, the kept previous one."""
    from reliability_support import cli, make_images, write_spec

    spec = write_spec(tmp_path, make_images(tmp_path / "data"), train={"epochs": 3})
    real_fsync = os.fsync

    def full_disk_fsync(fd):
        if (tmp_path / "run" / "last.json").exists():  # epoch 1's pairs are written; then the disk is full
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(writing.os, "fsync", full_disk_fsync)
    code, err = cli(capsys, "run", str(spec), "--output", str(tmp_path / "run"))
    monkeypatch.undo()
    assert code == 2, err
    assert "tlzoo: error: cannot write " in err and "No space left on device; the previous" in err, err
    assert "is kept" in err and "HINT: free space" in err and "Traceback" not in err
    assert load_checkpoint(tmp_path / "run" / "last")[1]["epoch"] == 1
    assert temporaries(tmp_path / "run") == []
