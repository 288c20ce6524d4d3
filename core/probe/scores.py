"""Scores of fixed features: a linear probe and a kNN classifier (LogME is in tlzoo.probe.logme).

The probe is multinomial logistic regression on standardized features (train
mean and std), fitted full-batch with L-BFGS and an L2 penalty chosen by
cross-validation on the training split only; validation is scored once. It is
what a head_only run converges to without augmentation, and a heuristic for the
accuracy after fine-tuning, no more.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

L2_GRID = (1e-3, 1e-2, 1e-1)  # penalty on the mean loss, weights of standardized features
CV_FOLDS = 3
KNN_K = 10


@dataclass
class ProbeResult:
    top1: float
    l2: float  # the penalty cross-validation chose
    cv_top1: float  # its mean held-out top-1 over the folds


def standardized(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 150,
                 start: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (D, C) and bias (C) minimising mean cross-entropy + l2/2 |W|^2 (the bias is not penalised).

    `start`: a solution for a stronger penalty; from there L-BFGS needs far fewer steps (a warm start).
    """
    weight = torch.zeros(x.shape[1], num_classes) if start is None else start[0].clone()
    bias = torch.zeros(num_classes) if start is None else start[1].clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + l2 / 2 * (weight ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean()) if y.numel() else float("nan")


def stratified_folds(y: torch.Tensor, folds: int, seed: int = 0) -> list[torch.Tensor]:
    """Index tensors of `folds` folds, each class dealt round-robin after a seeded shuffle."""
    generator = torch.Generator().manual_seed(seed)
    assignment = torch.empty_like(y)
    for c in y.unique():
        rows = (y == c).nonzero().flatten()
        rows = rows[torch.randperm(rows.numel(), generator=generator)]
        assignment[rows] = torch.arange(rows.numel()) % folds
    return [(assignment == f).nonzero().flatten() for f in range(folds)]


def choose_l2(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[float, float]:
    """(l2, mean held-out top-1): the grid value that cross-validates best.

    Ties go to the weaker penalty: the probe stands in for a head_only run, whose head is
    barely regularized (weight decay 1e-4), and on lite0's fp32 features a tie broken the
    other way cost 1.25 points against that run (0.9542 against 0.9667)."""
    strongest_first = sorted(L2_GRID, reverse=True)
    scores = {l2: [] for l2 in strongest_first}
    for held in stratified_folds(y, CV_FOLDS):
        keep = torch.ones(y.numel(), dtype=torch.bool)
        keep[held] = False
        xt, xh = standardized(x[keep], x[held])
        solution = None
        for l2 in strongest_first:  # along the path, each fit warm-started from the previous one
            solution = fit_logistic(xt, y[keep], num_classes, l2, start=solution)
            scores[l2].append(accuracy(xh @ solution[0] + solution[1], y[held]))
    best = (strongest_first[0], -1.0)
    for l2 in strongest_first:
        mean = sum(scores[l2]) / len(scores[l2])
        if mean >= best[1] - 1e-9:  # strongest first: a tie moves on to the weaker penalty
            best = (l2, mean)
    return best


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                 num_classes: int, l2: float | None = None) -> ProbeResult:
    """Validation top-1 of logistic regression fitted on the training features."""
    train_x, val_x = train_x.float(), val_x.float()
    cv_top1 = float("nan")
    if l2 is None:
        l2, cv_top1 = choose_l2(train_x, train_y, num_classes)
    xt, xv = standardized(train_x, val_x)
    solution = None
    for step in sorted((value for value in L2_GRID if value > l2), reverse=True) + [l2]:
        solution = fit_logistic(xt, train_y, num_classes, step, start=solution)
    weight, bias = solution
    return ProbeResult(accuracy(xv @ weight + bias, val_y), l2, cv_top1)


def knn_top1(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
             num_classes: int, k: int = KNN_K) -> float:
    """Top-1 of a k-nearest-neighbour vote by cosine similarity, each vote weighted by its similarity."""
    train_n = F.normalize(train_x.float(), dim=1)
    val_n = F.normalize(val_x.float(), dim=1)
    k = min(k, train_n.shape[0])
    similarity, index = (val_n @ train_n.T).topk(k, dim=1)
    votes = torch.zeros(val_n.shape[0], num_classes).scatter_add_(1, train_y[index], similarity)
    return accuracy(votes, val_y)
