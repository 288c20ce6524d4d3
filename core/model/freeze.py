"""Freezing on parameter groups: what a freeze strategy returns, and how it is applied.

A strategy never sees the architecture. For each epoch it says which groups
train, counted from the top (the head is the last group), and how the learning
rate of the backbone groups is scaled. The engine creates every optimizer group
up front and only flips `requires_grad` and learning rates, so runs can resume.

From an epoch's Phase follow `requires_grad`, the number of wholly frozen
leading stages (k, the part that runs without grad and that a cache may skip)
and the train/eval mode of every module. Under `bn: frozen` (the default) a
frozen BatchNorm neither uses batch statistics nor updates its running ones;
the seeds' loop calls model.train() on a frozen backbone and so quietly
changes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tlzoo.model.backbone import TransferModel


@dataclass(frozen=True)
class Phase:
    """What trains during one epoch."""

    trainable: int  # number of groups, counted from the top, that train (>= 1: the head)
    lr_scale: float = 1.0  # multiplies every group's learning rate this epoch

    def first_trainable(self, num_groups: int) -> int:
        """Index of the lowest trainable group."""
        return max(0, num_groups - max(1, self.trainable))


class FreezeStrategy:
    """Base class: override `phase(epoch, num_groups)`."""

    def phase(self, epoch: int, num_groups: int) -> Phase:
        raise NotImplementedError

    def plan(self, epochs: int, num_groups: int) -> list[Phase]:
        return [self.phase(epoch, num_groups) for epoch in range(epochs)]


def set_trainable(groups: list[list[nn.Parameter]], first_trainable: int) -> None:
    """Groups below `first_trainable` are frozen, the rest train."""
    for index, group in enumerate(groups):
        for param in group:
            param.requires_grad_(index >= first_trainable)


@dataclass(frozen=True)
class EpochPlan:
    phase: Phase
    first_trainable: int  # index of the lowest trainable group
    frozen_stages: int  # k: stages [0, k) hold only frozen groups


def frozen_stage_count(model: TransferModel, first_trainable: int) -> int:
    """How many leading stages lie wholly below group `first_trainable`."""
    count = 0
    for end in model.stage_group_end():
        if end > first_trainable:
            break
        count += 1
    return count


def plan_epoch(model: TransferModel, strategy, epoch: int) -> EpochPlan:
    phase = strategy.phase(epoch, model.num_groups)
    first = phase.first_trainable(model.num_groups)
    return EpochPlan(phase, first, frozen_stage_count(model, first))


def apply_plan(model: TransferModel, plan: EpochPlan, bn: str) -> None:
    """Set requires_grad for the epoch and put the model in training mode accordingly."""
    set_trainable(model.group_parameters(), plan.first_trainable)
    set_train_modes(model, plan.frozen_stages, bn)


def set_train_modes(model: TransferModel, frozen_stages: int, bn: str) -> None:
    """Training mode, except what is frozen under bn="frozen".

    Frozen leading stages go wholly to eval mode (no dropout or drop-path in a
    part that should act as a fixed feature extractor, and what a cache relies
    on). In the trainable rest, a BatchNorm whose parameters are all frozen
    goes to eval mode too.
    """
    model.train()
    if bn != "frozen":
        return
    for stage in model.stages[:frozen_stages]:
        stage.eval()
    for stage in model.stages[frozen_stages:]:
        for layer in stage.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                params = list(layer.parameters())
                if params and not any(p.requires_grad for p in params):
                    layer.eval()


def plan_run(model: TransferModel, strategy, epochs: int) -> list[EpochPlan]:
    """The run's plan, epoch by epoch: worked out once by the engine, read by the loop, the cache and the allocator."""
    return [plan_epoch(model, strategy, epoch) for epoch in range(epochs)]
