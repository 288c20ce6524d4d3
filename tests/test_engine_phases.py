"""Freeze phases on a real (tiny) TransferModel: trainable groups, frozen stages, BatchNorm, optimizer groups."""

from __future__ import annotations

import pytest
import torch

from tlzoo.data.batches import Batch
from tlzoo.engine.loop import LoopConfig, Trainer
from tlzoo.engine.optim import Schedule, base_learning_rates, build_optimizer
from tlzoo.model.freeze import apply_plan, frozen_stage_count, plan_epoch, set_train_modes
from tlzoo.engine.progress import PlainProgress
from tlzoo.engine.state import TrainState
from tlzoo.spec import OptimizerSpec, SchedulerSpec
from tlzoo.registry import get_registry



def strategy(name: str, **options):
    component = get_registry().catalog("strategies").get_component(name)
    return component.build(component.options.model_validate(options))


def trainable_groups(model) -> list[int]:
    """Indices of groups whose parameters all train."""
    return [i for i, group in enumerate(model.group_parameters()) if all(p.requires_grad for p in group)]


def frozen_groups_are_whole(model) -> bool:
    return all(len({p.requires_grad for p in group}) == 1 for group in model.group_parameters())


# tiny_model: 3 backbone groups (one per stage) + head = 4 groups
@pytest.mark.parametrize("name, options, expected", [
    ("none", {}, [[0, 1, 2, 3]] * 3),
    ("head_only", {}, [[3]] * 3),
    ("freeze_unfreeze", {"frozen_epochs": 2}, [[3], [3], [0, 1, 2, 3], [0, 1, 2, 3]]),
    ("freeze_unfreeze", {"frozen_epochs": 1, "groups": 1}, [[3], [2, 3], [2, 3]]),
    ("gradual", {"every": 1, "start": 1}, [[3], [2, 3], [1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]]),
    ("gradual", {"every": 2, "start": 0}, [[2, 3], [2, 3], [1, 2, 3], [1, 2, 3], [0, 1, 2, 3]]),
    ("partial", {"groups": 1}, [[2, 3]] * 2),
])
def test_each_strategy_trains_the_expected_groups_per_epoch(tiny_model, name, options, expected):
    chosen = strategy(name, **options)
    for epoch, groups in enumerate(expected):
        plan = plan_epoch(tiny_model, chosen, epoch)
        apply_plan(tiny_model, plan, "frozen")
        assert trainable_groups(tiny_model) == groups, f"epoch {epoch}"
        assert frozen_groups_are_whole(tiny_model)
        # k = leading stages that hold only frozen groups (each stage here is one group)
        assert plan.frozen_stages == groups[0]


def test_frozen_stage_count_stops_at_the_first_stage_touching_a_trainable_group(tiny_model):
    assert [frozen_stage_count(tiny_model, first) for first in range(4)] == [0, 1, 2, 3]


def test_frozen_batchnorm_keeps_running_statistics_and_train_updates_them(tiny_model):
    bns = [m for m in tiny_model.stages.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [(bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)) for bn in bns]
    x = torch.randn(6, 3, 32, 32) * 3 + 1

    plan = plan_epoch(tiny_model, strategy("head_only"), 0)
    apply_plan(tiny_model, plan, "frozen")
    assert all(not bn.training for bn in bns)
    trainer = make_trainer(tiny_model, strategy("head_only"), "frozen")
    trainer.train_step(Batch(x, torch.tensor([0, 1, 2, 0, 1, 2])), plan.frozen_stages, 0)
    for bn, (mean, var, tracked) in zip(bns, before):
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
        assert int(bn.num_batches_tracked) == tracked

    apply_plan(tiny_model, plan, "train")  # as the seeds do: model.train() on a frozen backbone
    assert all(bn.training for bn in bns)
    trainer.config.bn = "train"
    trainer.train_step(Batch(x, torch.tensor([0, 1, 2, 0, 1, 2])), plan.frozen_stages, 0)
    assert all(not torch.equal(bn.running_mean, mean) for bn, (mean, _, _) in zip(bns, before))
    # frozen under bn=train still means no parameter update
    assert all(p.grad is None for p in tiny_model.stages.parameters())


def test_partly_frozen_stage_puts_only_its_frozen_batchnorm_in_eval(tiny_model):
    # freeze group 0 only: stage 0 frozen (k=1); stages 1-2 train
    plan = plan_epoch(tiny_model, strategy("partial", groups=2), 0)
    apply_plan(tiny_model, plan, "frozen")
    assert plan.frozen_stages == 1
    assert not tiny_model.stages[0].training
    assert tiny_model.stages[1].training and tiny_model.stages[1][1].training
    # a BatchNorm whose own parameters are frozen inside a training stage goes to eval too
    for param in tiny_model.stages[1][1].parameters():
        param.requires_grad_(False)
    set_train_modes(tiny_model, plan.frozen_stages, "frozen")
    assert tiny_model.stages[1].training and not tiny_model.stages[1][1].training
    set_train_modes(tiny_model, plan.frozen_stages, "train")
    assert tiny_model.stages[1][1].training and tiny_model.stages[0].training


def make_trainer(model, chosen, bn="frozen", optimizer="adamw"):
    groups = model.group_parameters()
    opt = build_optimizer(groups, OptimizerSpec(name=optimizer, lr=0.1), base_learning_rates(len(groups), 0.1, 0.1))
    state = TrainState(model, opt, Schedule(SchedulerSpec(name="none"), 4, 1))
    config = LoopConfig(4, 0, bn, torch.device("cpu"), "fp32", 3)
    return Trainer(state, chosen, torch.nn.CrossEntropyLoss(), None, None, config, PlainProgress())


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizer_groups_are_the_same_objects_across_unfreezing(tiny_model, optimizer):
    chosen = strategy("gradual", every=1, start=1)
    trainer = make_trainer(tiny_model, chosen, optimizer=optimizer)
    opt = trainer.state.optimizer
    groups_before = [group for group in opt.param_groups]
    params_before = [[id(p) for p in group["params"]] for group in opt.param_groups]
    assert len(groups_before) == tiny_model.num_groups
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.01, 0.01, 0.1])
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    weights_before = [p.detach().clone() for p in tiny_model.stages.parameters()]
    for epoch in range(4):
        plan = plan_epoch(tiny_model, chosen, epoch)
        apply_plan(tiny_model, plan, "frozen")
        trainer.train_step(Batch(x, y), plan.frozen_stages, epoch)
        assert len(opt.param_groups) == len(groups_before)
        assert all(a is b for a, b in zip(opt.param_groups, groups_before))
        assert [[id(p) for p in group["params"]] for group in opt.param_groups] == params_before
    # by the last epoch every group trained, so stage weights moved
    assert any(not torch.equal(a, b) for a, b in zip(weights_before, tiny_model.stages.parameters()))


def test_head_only_step_leaves_the_backbone_untouched(tiny_model):
    trainer = make_trainer(tiny_model, strategy("head_only"))
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    plan = plan_epoch(tiny_model, trainer.strategy, 0)
    apply_plan(tiny_model, plan, "frozen")
    trainer.train_step(Batch(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])), plan.frozen_stages, 0)
    for name, param in tiny_model.named_parameters():
        assert torch.equal(param, before[name]) == (not name.startswith("head.")), name


def test_a_batch_entering_at_the_frozen_boundary_gives_the_same_step(tiny_model):
    """The cache seam: activations at stage k train the head exactly like the images they came from."""
    import copy

    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    other = copy.deepcopy(tiny_model)
    results = []
    for model, use_cache in ((tiny_model, False), (other, True)):
        trainer = make_trainer(model, strategy("partial", groups=1))
        plan = plan_epoch(model, trainer.strategy, 0)
        apply_plan(model, plan, "frozen")
        batch = Batch(x, y)
        if use_cache:
            with torch.no_grad():
                batch = Batch(model.forward_stages(x, 0, plan.frozen_stages), y, plan.frozen_stages)
        loss = trainer.train_step(batch, plan.frozen_stages, 0)
        results.append((loss, [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == pytest.approx(results[1][0], abs=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.allclose(a, b, atol=1e-6)


def test_nan_loss_stops_before_the_weights_change(tiny_model):
    from tlzoo.errors import TlzooError

    trainer = make_trainer(tiny_model, strategy("none"))
    before = [p.detach().clone() for p in tiny_model.parameters()]
    plan = plan_epoch(tiny_model, trainer.strategy, 0)
    apply_plan(tiny_model, plan, "frozen")
    x = torch.full((2, 3, 32, 32), float("nan"))
    with pytest.raises(TlzooError, match="epoch 1, step 1"):
        trainer.train_step(Batch(x, torch.tensor([0, 1])), plan.frozen_stages, 0)
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_model.parameters()))
