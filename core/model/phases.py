"""Applying a freeze Phase to a TransferModel for one epoch.

The Phase says which groups train; from it follow `requires_grad`, the number
of wholly frozen leading stages (k, the part that runs without grad and that a
cache may skip) and the train/eval mode of every module. Under `bn: frozen`
(the default) a frozen BatchNorm neither uses batch statistics nor updates its
running ones; the seeds' loop calls model.train() on a frozen backbone and so
quietly changes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tlzoo.model.backbone import TransferModel
from tlzoo.model.freeze import Phase, set_trainable


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


def trainable_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
