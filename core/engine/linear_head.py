"""Linear heads trained on fixed pooled features, as a head-only run trains its head: AdamW, the engine's cosine
schedule per step, label smoothing, shuffled batches (a batch of one dropped, as the loop drops it).

Two users: `train.head_first` fits a run's head this way before its first epoch (tlzoo.engine.head_first),
and `tlzoo train`'s head sweep trains several seeds of each setting side by side (tlzoo.auto.head_sweep).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tlzoo.engine.optim import Schedule, build_optimizer
from tlzoo.spec import OptimizerSpec, SchedulerSpec


def stacked_heads(train_x, train_y, num_classes: int, lr: float, epochs: int, seed: int, label_smoothing: float,
                  weight_decay: float, batch_size: int, repeats: int = 1, class_weight: torch.Tensor | None = None):
    """`repeats` linear heads trained side by side, each with its own initialisation and batch order; yields
    their stacked weight (repeats, width, classes) and bias (repeats, 1, classes) after each epoch. AdamW's update
    is elementwise, so stacking them changes nothing but the number of Python steps. `class_weight` weighs the
    loss per class (train.class_weights "balanced"), for one head (several would share one weighted mean)."""
    generator = torch.Generator().manual_seed(seed)
    width = train_x.shape[1]
    bound = 1 / width ** 0.5  # nn.Linear's own initialisation, drawn from the seeded generator
    weight = torch.empty(repeats, width, num_classes).uniform_(-bound, bound, generator=generator).requires_grad_()
    bias = torch.empty(repeats, 1, num_classes).uniform_(-bound, bound, generator=generator).requires_grad_()
    optimizer = build_optimizer([[weight, bias]], OptimizerSpec(name="adamw", lr=lr, weight_decay=weight_decay),
                                [lr])
    count = train_x.shape[0]
    drop_last = count % batch_size == 1 and count > 1
    steps = count // batch_size if drop_last else -(-count // batch_size)
    schedule = Schedule(SchedulerSpec(name="cosine"), epochs, steps)
    step = 0
    for epoch in range(epochs):
        orders = torch.stack([torch.randperm(count, generator=generator) for _ in range(repeats)])
        for start in range(0, steps * batch_size, batch_size):
            rows = orders[:, start:start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * schedule.factor(epoch, step)
            logits = torch.baddbmm(bias, train_x[rows], weight)
            # each head's own mean loss, summed: every head gets the gradient it would get alone
            loss = F.cross_entropy(logits.flatten(0, 1), train_y[rows].flatten(), weight=class_weight,
                                   label_smoothing=label_smoothing) * repeats
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        yield weight.detach(), bias.detach()


def fit_linear_head(train_x, train_y, num_classes: int, lr: float, epochs: int, seed: int, label_smoothing: float,
                    weight_decay: float, batch_size: int, class_weight: torch.Tensor | None = None):
    """One head: (weight (classes, width), bias (classes,)) after its last epoch, in nn.Linear's layout."""
    for weight, bias in stacked_heads(train_x.float(), train_y, num_classes, lr, epochs, seed, label_smoothing,
                                      weight_decay, batch_size, 1, class_weight):
        pass
    return weight[0].t().contiguous(), bias[0, 0].clone()
