"""`train.head_first` (LP-FT, Kumar et al. 2022): the new head fitted alone on the frozen backbone's pooled
features before the first epoch.

A fine-tune that starts under a random head sends that head's large early
errors down into the groups it trains, and they move away from the pretrained
features before the head is any good; a head fitted first leaves them less to
undo. The features are the pretrained backbone's as a head_only run without
augmentation reads them: the same cache entries as `rank`, `tlzoo train`'s
probe and the run's data findings, so once any of these ran they cost a read.
"""

from __future__ import annotations

import time

import torch

from tlzoo.data.class_balance import class_weights
from tlzoo.engine.features import frozen_view, pooled_features
from tlzoo.engine.linear_head import fit_linear_head


def fit_head_first(setup, log) -> None:
    """Train `setup`'s head as train.head_first asks (nothing when its epochs are 0), in place."""
    spec = setup.resolved.spec
    first, train = spec.train.head_first, spec.train
    if not first.epochs:
        return
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # the features' model draws a head of its own: the run's draws stay
        features = pooled_features(frozen_view(setup.resolved), setup.data, log)
    weights = class_weights(setup.data.train, features.num_classes) if train.class_weights == "balanced" else None
    with torch.enable_grad():
        weight, bias = fit_linear_head(features.train_x, features.train_y, features.num_classes, first.lr,
                                       first.epochs, train.seed, train.label_smoothing,
                                       train.optimizer.weight_decay, spec.data.batch_size, weights)
    fc = setup.built.model.head.fc
    with torch.no_grad():
        fc.weight.copy_(weight)
        fc.bias.copy_(bias)
    scored = ""
    if features.val_y.numel():
        right = ((features.val_x.float() @ weight.t() + bias).argmax(1) == features.val_y).float().mean()
        scored = f": val top-1 {float(right):.4f}"
    log(f"head first: {first.epochs} epoch(s) of the head alone at lr {first.lr:g} on the frozen features of "
        f"{features.train_y.numel()} training images{scored}, {time.perf_counter() - started:.1f} s")
