"""A short sweep of the head's learning rate and epochs on cached features: a head-only run in miniature.

With the backbone frozen and no augmentation a head-only run trains a linear
layer on fixed pooled features, the ones `rank`'s probe read from the cache.
The sweep trains that layer as the run would (AdamW, the engine's cosine
schedule per step, label smoothing, batches of 32, the best epoch by validation
top-1) for each learning rate and length, in milliseconds per configuration.

A configuration replaces the demo's (lr 3e-3, 10 epochs) only when it
validates better by more than one image: with a few hundred validation images,
smaller differences are noise, and picking the best of twelve by noise is how a
search overfits its validation split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tlzoo.engine.optim import Schedule, build_optimizer
from tlzoo.runtime.device import one_thread
from tlzoo.spec import OptimizerSpec, SchedulerSpec

LRS = (1e-3, 3e-3, 1e-2)
EPOCHS = (5, 10, 20, 40)
DEFAULT = (3e-3, 10)


@dataclass(frozen=True)
class SweepPoint:
    lr: float
    epochs: int
    best_epoch: int
    val_top1: float
    val_loss: float  # at the best epoch
    correct: int


@dataclass
class Sweep:
    points: list[SweepPoint]
    chosen: SweepPoint
    reason: str


def train_head(train_x, train_y, val_x, val_y, num_classes: int, lr: float, epochs: int, seed: int,
               label_smoothing: float, weight_decay: float, batch_size: int) -> SweepPoint:
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(train_x.shape[1], num_classes)
    with torch.no_grad():  # nn.Linear's own initialisation, drawn from the sweep's seeded generator
        bound = 1 / train_x.shape[1] ** 0.5
        head.weight.uniform_(-bound, bound, generator=generator)
        head.bias.uniform_(-bound, bound, generator=generator)
    optimizer = build_optimizer([list(head.parameters())], OptimizerSpec(name="adamw", lr=lr,
                                                                          weight_decay=weight_decay), [lr])
    count = train_x.shape[0]
    drop_last = count % batch_size == 1 and count > 1  # as the engine: a batch of one is dropped
    steps = count // batch_size if drop_last else -(-count // batch_size)
    schedule = Schedule(SchedulerSpec(name="cosine"), epochs, steps)
    best = SweepPoint(lr, epochs, 0, -1.0, float("inf"), -1)
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(count, generator=generator)
        for start in range(0, steps * batch_size, batch_size):
            rows = order[start:start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * schedule.factor(epoch, step)
            loss = F.cross_entropy(head(train_x[rows]), train_y[rows], label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        with torch.no_grad():
            logits = head(val_x)
            correct = int((logits.argmax(1) == val_y).sum())
            val_loss = float(F.cross_entropy(logits, val_y))
        if correct > best.correct:  # the run's best epoch: the first of its best validation top-1
            best = SweepPoint(lr, epochs, epoch + 1, correct / max(1, val_y.numel()), val_loss, correct)
    return best


def sweep_head(features, seed: int, label_smoothing: float, weight_decay: float, batch_size: int,
               lrs=LRS, epochs=EPOCHS) -> Sweep:
    """Every (lr, epochs) on `features` (tlzoo.engine.features.Features); the chosen point and why."""
    train_x, val_x = features.train_x.float(), features.val_x.float()
    points = []
    with one_thread(), torch.enable_grad():
        for lr in lrs:
            for length in epochs:
                points.append(train_head(train_x, features.train_y, val_x, features.val_y, features.num_classes,
                                         lr, length, seed, label_smoothing, weight_decay, batch_size))
    best = max(points, key=lambda p: (p.correct, -p.val_loss, -p.epochs))
    default = next((p for p in points if (p.lr, p.epochs) == DEFAULT), None)
    if default is not None and best.correct - default.correct <= 1:
        return Sweep(points, default, f"the demo's lr {DEFAULT[0]:g} and {DEFAULT[1]} epochs: no other of the "
                                      f"{len(points)} settings validated better by more than one image")
    return Sweep(points, best, f"lr {best.lr:g} and {best.epochs} epochs validated best ({best.correct} of "
                               f"{val_y_count(features)} images" + (f", {best.correct - default.correct} more than "
                                                                    f"the demo's setting)" if default else ")"))


def val_y_count(features) -> int:
    return int(features.val_y.numel())
