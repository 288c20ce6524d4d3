"""A short sweep of the head's learning rate and epochs on cached features: a head-only run in miniature.

With the backbone frozen and no augmentation a head-only run trains a linear
layer on fixed pooled features, the ones `rank`'s probe read from the cache.
The sweep trains that layer as the run would (AdamW, the engine's cosine
schedule per step, label smoothing, batches of 32, the last epoch kept:
tlzoo.auto.recipes.HEAD_KEEP says why) for each learning rate and length.

Each setting is trained from REPEATS seeds at once (their weights stacked in
one tensor, each with its own initialisation and batch order; fewer seeds on
larger training sets, see `seeds_for`) and scored by the mean of their
kept-epoch validation images: on 40 validation images one seed
of the demo's setting scored anywhere from 17 to 26 (benchmarks/RESULTS.md,
2026-12-04, shapes-fewshot), so a single draw would compare seeds, not settings,
and a final run (another draw) would not repeat the score its choice was made on.

A configuration replaces the demo's (lr 3e-3, 10 epochs) only when it
validates better by more than one image: with a few hundred validation images,
smaller differences are noise, and picking the best of twelve by noise is how a
search overfits its validation split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tlzoo.engine.linear_head import stacked_heads
from tlzoo.runtime.device import one_thread

LRS = (1e-3, 3e-3, 1e-2)
EPOCHS = (5, 10, 20, 40)
DEFAULT = (3e-3, 10)
REPEATS = 5  # seeds of each setting, trained together
SEEDED_IMAGES = 5000  # training images x seeds: fewer seeds on more images (less noise, and each costs more)


@dataclass(frozen=True)
class SweepPoint:
    lr: float
    epochs: int
    val_top1: float  # the seeds' mean, as `correct`
    val_loss: float  # at each seed's last epoch (the one a head-only run keeps), averaged
    correct: float  # validation images right at each seed's last epoch, averaged over the seeds
    lowest: int  # the seeds' fewest and most images right: how far one draw of this setting strays
    highest: int
    seeds: int

    def describe(self, val_images: int) -> str:
        if self.seeds == 1:
            return f"{count_text(self.correct)} of {val_images}"
        return f"{self.correct:.1f} of {val_images} on average over {self.seeds} seeds ({self.lowest}-{self.highest})"


def count_text(images: float) -> str:
    """Images right: a whole count as such, a mean over seeds to one decimal."""
    return f"{images:.0f}" if float(images).is_integer() else f"{images:.1f}"


@dataclass
class Sweep:
    points: list[SweepPoint]
    chosen: SweepPoint
    reason: str


def train_head(train_x, train_y, val_x, val_y, num_classes: int, lr: float, epochs: int, seed: int,
               label_smoothing: float, weight_decay: float, batch_size: int, repeats: int = REPEATS) -> SweepPoint:
    """The heads of `stacked_heads` scored at their last epoch, the one a head-only run of tlzoo train keeps."""
    for weight, bias in stacked_heads(train_x, train_y, num_classes, lr, epochs, seed, label_smoothing,
                                      weight_decay, batch_size, repeats):
        pass
    with torch.no_grad():
        logits = torch.baddbmm(bias, val_x.expand(repeats, *val_x.shape), weight)
        correct = (logits.argmax(2) == val_y).sum(1)
        losses = F.cross_entropy(logits.transpose(1, 2), val_y.expand(repeats, -1), reduction="none").mean(1)
    mean = float(correct.double().mean())
    return SweepPoint(lr, epochs, mean / max(1, val_y.numel()), float(losses.mean()), mean,
                      int(correct.min()), int(correct.max()), repeats)


def seeds_for(train_images: int) -> int:
    return max(1, min(REPEATS, SEEDED_IMAGES // max(1, train_images)))


def sweep_head(features, seed: int, label_smoothing: float, weight_decay: float, batch_size: int,
               lrs=LRS, epochs=EPOCHS, repeats: int | None = None) -> Sweep:
    """Every (lr, epochs) on `features` (tlzoo.engine.features.Features); the chosen point and why."""
    train_x, val_x = features.train_x.float(), features.val_x.float()
    repeats = repeats or seeds_for(train_x.shape[0])
    points = []
    with one_thread(), torch.enable_grad():
        for lr in lrs:
            for length in epochs:
                points.append(train_head(train_x, features.train_y, val_x, features.val_y, features.num_classes,
                                         lr, length, seed, label_smoothing, weight_decay, batch_size, repeats))
    best = max(points, key=lambda p: (p.correct, -p.val_loss, -p.epochs))
    default = next((p for p in points if (p.lr, p.epochs) == DEFAULT), None)
    images = int(features.val_y.numel())
    if default is not None and best.correct - default.correct <= 1:
        return Sweep(points, default, f"the demo's lr {DEFAULT[0]:g} and {DEFAULT[1]} epochs, "
                                      f"{default.describe(images)}: no other of the {len(points)} settings "
                                      "validated better by more than one image")
    more = f", {count_text(best.correct - default.correct)} more than the demo's setting" if default else ""
    return Sweep(points, best, f"lr {best.lr:g} and {best.epochs} epochs validated best "
                               f"({best.describe(images)}{more})")
