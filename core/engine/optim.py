"""Optimizer groups and learning-rate schedules.

Every TransferModel group gets its own optimizer group from the first step,
head last; unfreezing changes requires_grad and learning rates, never the
groups (adding groups mid-run is what breaks resume elsewhere).

The schedule is a pure function of (epoch, step): the learning rate of group g
at global step s is base_lr[g] x phase.lr_scale x factor(s). The only state is
the step counter, so resuming needs nothing but the epoch and step.
"""

from __future__ import annotations

import math

import torch

from tlzoo.spec import OptimizerSpec, SchedulerSpec

# OneCycle's usual shape (as in Smith's paper and torch's defaults)
ONECYCLE_PCT_START = 0.3
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4


def base_learning_rates(num_groups: int, lr: float, backbone_lr_mult: float) -> list[float]:
    """Backbone groups at lr x backbone_lr_mult, the head (last group) at lr."""
    return [lr * backbone_lr_mult] * (num_groups - 1) + [lr]


def layer_decay_factors(num_groups: int, decay: float | None) -> list[float]:
    """timm's --layer-decay on parameter groups: group g (head last, factor 1) gets decay ** (G - 1 - g)."""
    if decay is None:
        return [1.0] * num_groups
    return [decay ** (num_groups - 1 - group) for group in range(num_groups)]


def build_optimizer(groups: list[list[torch.nn.Parameter]], spec: OptimizerSpec,
                    base_lrs: list[float]) -> torch.optim.Optimizer:
    param_groups = [{"params": params, "lr": lr, "base_lr": lr} for params, lr in zip(groups, base_lrs)]
    if spec.name == "sgd":
        return torch.optim.SGD(param_groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov,
                               weight_decay=spec.weight_decay)
    if spec.name == "adam":
        return torch.optim.Adam(param_groups, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(param_groups, lr=spec.lr, weight_decay=spec.weight_decay)


class Schedule:
    """factor(epoch, step) for the spec's scheduler; `steps_per_epoch` fixes the time axis."""

    def __init__(self, spec: SchedulerSpec, epochs: int, steps_per_epoch: int):
        self.spec = spec
        self.epochs = epochs
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = epochs * self.steps_per_epoch

    def factor(self, epoch: int, step: int) -> float:
        """Multiplier of the base learning rate at global step `step` (0-based) in `epoch`."""
        name = self.spec.name
        if name == "none":
            return 1.0
        if name == "step":  # torch's StepLR stepped once per epoch, as in the seeds
            return self.spec.gamma ** (epoch // self.spec.step_size)
        if name == "cosine":
            return self._cosine(step)
        return self._onecycle(step)

    def _cosine(self, step: int) -> float:
        warmup = round(self.spec.warmup_epochs * self.steps_per_epoch)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        span = max(1, self.total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        low = self.spec.min_lr_ratio
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))

    def _onecycle(self, step: int) -> float:
        """torch's OneCycleLR shape (two phases, cosine), learning rate only."""
        start = 1 / ONECYCLE_DIV
        end = start / ONECYCLE_FINAL_DIV
        peak_step = max(1.0, ONECYCLE_PCT_START * self.total_steps - 1)
        last_step = max(peak_step + 1, self.total_steps - 1)
        if step <= peak_step:
            return _cos_between(start, 1.0, step / peak_step)
        return _cos_between(1.0, end, min(1.0, (step - peak_step) / (last_step - peak_step)))


def _cos_between(a: float, b: float, t: float) -> float:
    """Cosine interpolation from a (t=0) to b (t=1)."""
    return b + (a - b) * 0.5 * (1 + math.cos(math.pi * t))


def set_learning_rates(optimizer: torch.optim.Optimizer, scale: float) -> list[float]:
    """lr of every group = its base lr x scale; returns the new rates."""
    rates = []
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * scale
        rates.append(group["lr"])
    return rates
