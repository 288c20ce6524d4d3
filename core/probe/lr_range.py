"""The learning-rate range test (Smith 2015, as fastai's `lr_find` runs it), on a spec's trainable part.

The learning rate grows exponentially from `start_lr` to `end_lr` over `steps`
optimizer steps of the spec's own training step (tlzoo.engine.loop.Trainer.train_step)
in the freeze phase of one epoch (the first by default), so a frozen backbone
trains through the activation cache. The test stops early once the loss diverges.
The model, its requires_grad flags and modes, and the RNG states are put back
afterwards; no run directory is made or touched.

Two suggestions from the smoothed loss (an exponential moving average, debiased); the command's
default is steepest, which did better than valley on flowers12 (benchmarks/RESULTS.md):
- valley (fastai's default since 2021): the middle of the longest stretch over which
  the smoothed loss keeps falling (its longest decreasing subsequence);
- steepest: where the smoothed loss falls fastest against log(lr), before its minimum
  (the first tenth of the points left out: their averages hold too few losses).
"""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from tlzoo.errors import TlzooError

SMOOTHING = 0.98  # weight of the running average, as fastai
DIVERGED = 4.0  # stop when the smoothed loss exceeds this multiple of its minimum
RULES = ("valley", "steepest")
RULE_TEXT = {
    "valley": "valley: the middle of the longest stretch over which the smoothed loss keeps falling",
    "steepest": "steepest: where the smoothed loss falls fastest against log(lr), before its minimum",
}


@dataclass
class RangeTest:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stopped: str  # why the test ended

    def suggestion(self, rule: str) -> float | None:
        index = valley_index(self.smoothed) if rule == "valley" else steepest_index(self.lrs, self.smoothed)
        return None if index is None else self.lrs[index]

    def to_json(self) -> dict:
        return {"lrs": self.lrs, "losses": self.losses, "smoothed": self.smoothed, "stopped": self.stopped,
                "suggestions": {rule: self.suggestion(rule) for rule in RULES}}


def lr_schedule(start_lr: float, end_lr: float, steps: int) -> list[float]:
    """`steps` learning rates, exponentially spaced from start_lr to end_lr inclusive."""
    if steps < 2:
        return [start_lr]
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / (steps - 1)) for i in range(steps)]


def range_test(step: Callable[[float], float], start_lr: float = 1e-7, end_lr: float = 10.0,
               steps: int = 200) -> RangeTest:
    """Call `step(lr)` (one optimizer step at that lr, returning its loss) along the schedule until it diverges."""
    lrs, losses, smoothed, average, best = [], [], [], 0.0, math.inf
    stopped = f"all {steps} steps"
    for index, lr in enumerate(lr_schedule(start_lr, end_lr, steps)):
        loss = step(lr)
        if not math.isfinite(loss):
            stopped = f"the loss became {loss} at lr {lr:.3g}"
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        value = average / (1 - SMOOTHING ** (index + 1))
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if index > 10 and value > DIVERGED * best:
            stopped = f"the smoothed loss passed {DIVERGED:g}x its minimum at lr {lr:.3g}"
            break
    return RangeTest(lrs, losses, smoothed, stopped)


def valley_index(smoothed: list[float]) -> int | None:
    """Middle of the longest decreasing subsequence of the smoothed loss (its first to its last point)."""
    n = len(smoothed)
    if n < 3:
        return None
    length, previous = [1] * n, [-1] * n
    for i in range(n):
        for j in range(i):
            if smoothed[j] > smoothed[i] and length[j] + 1 > length[i]:
                length[i], previous[i] = length[j] + 1, j
    last = max(range(n), key=lambda i: (length[i], -i))
    first = last
    while previous[first] != -1:
        first = previous[first]
    return (first + last) // 2 if last > first else None


def steepest_index(lrs: list[float], smoothed: list[float]) -> int | None:
    """Index of the most negative slope d(smoothed)/d(log lr) up to the minimum of the smoothed loss."""
    end = int(np.argmin(smoothed)) + 1 if smoothed else 0
    skip = max(2, len(smoothed) // 10)  # the first averages hold few losses: their slopes are noise
    if end - skip < 3:
        return None
    slopes = np.gradient(np.asarray(smoothed[skip:end]), np.log(np.asarray(lrs[skip:end])))
    return skip + int(np.argmin(slopes))


@contextlib.contextmanager
def restored(model: torch.nn.Module):
    """Put back, however the block ends, the model's values, requires_grad flags, modes and the RNG states."""
    values = {name: tensor.detach().clone() for name, tensor in model.state_dict(keep_vars=True).items()}
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    rngs = torch.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, tensor in model.state_dict(keep_vars=True).items():
                tensor.copy_(values[name])
        for parameter, flag in zip(model.parameters(), flags):
            parameter.requires_grad_(flag)
        for module, mode in zip(model.modules(), modes):
            module.training = mode
        torch.set_rng_state(rngs[0])
        random.setstate(rngs[1])
        np.random.set_state(rngs[2])


def spec_range_test(resolved, log, steps: int = 200, start_lr: float = 1e-7, end_lr: float = 10.0,
                    epoch: int = 0) -> RangeTest:
    """The range test on the spec's data and model, in the freeze phase of `epoch` (0-based)."""
    from tlzoo.cache import attach_caches, run_cache_scope
    from tlzoo.data.batches import seed_everything
    from tlzoo.data.labelled import load_labelled
    from tlzoo.engine.setup import batch_sources, model_setup

    spec = resolved.spec
    if not 0 <= epoch < spec.train.epochs:
        raise TlzooError(f"--epoch {epoch + 1} is outside the spec's {spec.train.epochs} epoch(s)",
                         f"pass an epoch from 1 to {spec.train.epochs}")
    seed_everything(spec.train.seed)
    with run_cache_scope():
        data = load_labelled(resolved)
        setup = model_setup(resolved, data, log)
        train, val = batch_sources(setup)
        train, _ = attach_caches(setup, train, val, log)
        trainer, plan = trainer_for(setup, train, epoch)
        log(f"lr-find: {resolved.spec.train.strategy.name} at epoch {epoch + 1}: "
            f"{setup.built.model.num_groups - plan.first_trainable} trainable group(s), {plan.frozen_stages} frozen "
            f"stage(s); lr {start_lr:g} to {end_lr:g} over {steps} steps")
        with restored(setup.built.model):
            return range_test(batch_stepper(trainer, train, plan, epoch, spec.train.optimizer.lr),
                              start_lr, end_lr, steps)


def trainer_for(setup, train, epoch: int):
    """A Trainer (for its train_step) with the spec's optimizer and loss, its model in `epoch`'s freeze phase."""
    from tlzoo.engine.loop import LoopConfig, Trainer
    from tlzoo.engine.optim import Schedule, base_learning_rates, build_optimizer
    from tlzoo.data.class_balance import class_weights
    from tlzoo.engine.state import TrainState
    from tlzoo.model.freeze import apply_plan, plan_epoch

    spec, model = setup.resolved.spec, setup.built.model
    train_spec, num_classes = spec.train, len(setup.data.classes)
    strategy = setup.strategy
    plan = plan_epoch(model, strategy, epoch)
    apply_plan(model, plan, train_spec.bn)
    optimizer = build_optimizer(model.group_parameters(), train_spec.optimizer,
                                base_learning_rates(model.num_groups, train_spec.optimizer.lr,
                                                    train_spec.backbone_lr_mult))
    weights = class_weights(setup.data.train, num_classes) if train_spec.class_weights == "balanced" else None
    criterion = torch.nn.CrossEntropyLoss(weight=None if weights is None else weights.to(setup.device),
                                          label_smoothing=train_spec.label_smoothing)
    state = TrainState(model, optimizer, Schedule(train_spec.scheduler, train_spec.epochs, len(train)))
    config = LoopConfig(train_spec.epochs, train_spec.seed, train_spec.bn, setup.device, setup.precision, num_classes)
    return Trainer(state, strategy, criterion, train, None, config, progress=None), plan


def batch_stepper(trainer, source, plan, epoch: int, spec_lr: float) -> Callable[[float], float]:
    """step(lr): one training step on the next batch, every group at its spec share of `lr` (as optimizer.lr)."""
    from tlzoo.engine.optim import set_learning_rates

    def batches():
        current = epoch
        while True:  # as many epochs of batches as the steps need
            yield from source.epoch(current, plan.frozen_stages)
            current += 1

    stream = batches()

    def step(lr: float) -> float:
        set_learning_rates(trainer.state.optimizer, plan.phase.lr_scale * lr / spec_lr)
        try:
            return trainer.train_step(next(stream), plan.frozen_stages, epoch)
        except TlzooError:  # train_step refuses a non-finite loss before updating: here that is divergence
            return math.inf

    return step
