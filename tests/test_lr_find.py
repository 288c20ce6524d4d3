"""tlzoo lr-find: the range test's schedule and rules, the model put back, the command on a tiny backbone."""

from __future__ import annotations

import json
import math

import pytest
import torch

from support import TinyNet, make_image_folder, write_spec
from tlzoo.probe.lr_range import lr_schedule, range_test, restored, steepest_index, valley_index


def test_schedule_is_exponential_from_start_to_end():
    lrs = lr_schedule(1e-6, 1.0, 7)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    assert all(b / a == pytest.approx(10.0) for a, b in zip(lrs, lrs[1:]))


def test_valley_is_the_middle_of_the_longest_decreasing_stretch():
    #            0    1    2    3    4    5    6    7
    smoothed = [5.0, 4.0, 4.5, 3.0, 2.0, 1.0, 3.0, 9.0]
    # longest decreasing subsequence 5, 4, 3, 2, 1 runs from index 0 to 5: its middle is 2
    assert valley_index(smoothed) == 2
    assert valley_index([1.0, 2.0, 3.0]) is None  # the loss never fell


def test_steepest_is_the_fastest_fall_before_the_minimum():
    lrs = [10.0 ** e for e in range(-7, 1)]
    assert steepest_index(lrs, [3.0, 3.0, 3.0, 2.9, 1.0, 0.9, 0.8, 5.0]) in (3, 4)
    assert steepest_index(lrs[:4], [3.0, 2.0, 1.0, 4.0]) is None  # too few points before the minimum


def test_restored_puts_back_values_flags_modes_and_rng(one_thread):
    torch.manual_seed(0)
    model = TinyNet()
    model.stem.requires_grad_(False)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with restored(model):
        model.train()
        model.requires_grad_(True)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(3):
            loss = model(torch.randn(4, 3, 16, 16)).logsumexp(1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert not torch.equal(model.layer1[0].weight, before["layer1.0.weight"])
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # BatchNorm running stats included
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert all(p.requires_grad for p in model.layer1.parameters())
    assert not any(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)


def test_range_test_on_a_synthetic_problem_suggests_a_finite_lr_and_stops_at_divergence(one_thread):
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = torch.nn.Linear(8, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)

    def step(lr):
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows = torch.randint(0, 256, (32,))
        loss = torch.nn.functional.cross_entropy(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    test = range_test(step, 1e-4, 1e6, 150)
    assert len(test.lrs) < 150 and ("passed" in test.stopped or "became" in test.stopped)  # diverged early
    for rule in ("valley", "steepest"):
        lr = test.suggestion(rule)
        assert lr is not None and math.isfinite(lr) and 1e-4 < lr < 1e3


@pytest.fixture
def tiny_spec(tmp_path, tiny_backbone, monkeypatch):
    monkeypatch.setenv("TLZOO_CPU_BF16", "0")
    make_image_folder(tmp_path / "images", classes=3, per_class=6, val_per_class=3)
    return write_spec(tmp_path, tmp_path / "images", cache={"dir": str(tmp_path / "cache")})


def test_lr_find_command_plots_suggests_applies_and_leaves_no_run(tiny_spec, tmp_path, monkeypatch, capsys):
    from tlzoo.cli.main import main
    from tlzoo.registry import get_registry
    from tlzoo.spec import load_spec

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    main(["lr-find", str(tiny_spec), "--steps", "40", "--start-lr", "1e-5", "--end-lr", "10", "--apply", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert 5 <= len(out["lrs"]) <= 40 and all(math.isfinite(v) for v in out["losses"])
    assert out["rule"] == "steepest" and 1e-5 <= out["suggested_lr"] <= 10
    assert (work / "lr-find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    copy = load_spec(work / "spec.lr.json", get_registry())  # runs as it is, from another folder
    assert copy.spec.train.optimizer.lr == pytest.approx(out["suggested_lr"], rel=1e-2)
    assert copy.spec.train.optimizer.name == "adam" and copy.path(copy.spec.output) == tmp_path / "runs"
    assert not (tmp_path / "runs").exists()  # no run directory was made
    assert any((tmp_path / "cache" / "activations").iterdir())  # the frozen backbone ran through the cache


def test_lr_find_refuses_an_epoch_outside_the_spec(tiny_spec, capsys):
    from tlzoo.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["lr-find", str(tiny_spec), "--epoch", "5"])
    assert exit_info.value.code == 2
    assert "--epoch 5 is outside the spec's 2 epoch(s)" in capsys.readouterr().err
