"""Learning-rate schedules and optimizer groups against torch's own schedulers."""

from __future__ import annotations

import pytest
import torch

from tlzoo.engine.optim import Schedule, base_learning_rates, build_optimizer, set_learning_rates
from tlzoo.spec import OptimizerSpec, SchedulerSpec


def one_param_optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_step_schedule_matches_torch_steplr_per_epoch():
    schedule = Schedule(SchedulerSpec(name="step", step_size=5, gamma=0.5), epochs=12, steps_per_epoch=3)
    optimizer = one_param_optimizer()
    torch_schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    for epoch in range(12):
        for step in range(epoch * 3, epoch * 3 + 3):
            assert schedule.factor(epoch, step) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        torch_schedule.step()


def test_onecycle_matches_torch_onecycle():
    epochs, steps = 4, 7
    schedule = Schedule(SchedulerSpec(name="onecycle"), epochs, steps)
    optimizer = one_param_optimizer()
    torch_schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=epochs * steps,
                                                         cycle_momentum=False)
    for step in range(epochs * steps):
        assert schedule.factor(step // steps, step) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-6)
        optimizer.step()
        torch_schedule.step()


def test_cosine_warms_up_then_decays_to_the_floor():
    schedule = Schedule(SchedulerSpec(name="cosine", warmup_epochs=1, min_lr_ratio=0.1), epochs=5, steps_per_epoch=4)
    factors = [schedule.factor(step // 4, step) for step in range(20)]
    assert factors[:4] == sorted(factors[:4]) and factors[0] < factors[3] < 1.0
    assert factors[4] == pytest.approx(1.0)
    after = factors[4:]
    assert after == sorted(after, reverse=True)
    assert schedule.factor(5, 20) == pytest.approx(0.1)


def test_none_schedule_is_constant():
    schedule = Schedule(SchedulerSpec(name="none"), epochs=3, steps_per_epoch=2)
    assert {schedule.factor(s // 2, s) for s in range(6)} == {1.0}


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                       ("adamw", torch.optim.AdamW)])
def test_one_optimizer_group_per_model_group_head_last(name, cls):
    groups = [[torch.nn.Parameter(torch.zeros(2))] for _ in range(3)]
    spec = OptimizerSpec(name=name, lr=0.01, nesterov=name == "sgd", weight_decay=0.001)
    optimizer = build_optimizer(groups, spec, base_learning_rates(3, 0.01, 0.1))
    assert isinstance(optimizer, cls)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.001, 0.001, 0.01])
    assert all(g["weight_decay"] == 0.001 for g in optimizer.param_groups)
    if name == "sgd":
        assert optimizer.param_groups[0]["nesterov"] and optimizer.param_groups[0]["momentum"] == 0.9
    assert set_learning_rates(optimizer, 0.5) == pytest.approx([0.0005, 0.0005, 0.005])
