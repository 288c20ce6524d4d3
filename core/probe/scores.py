"""Scores of fixed features: a linear probe and a kNN classifier (LogME is in tlzoo.probe.logme).

The probe is multinomial logistic regression (tlzoo.findings.logistic, shared
with the mislabelled-image finding) on standardized features, its L2 penalty
chosen by cross-validation on the training split only; validation is scored
once. It is what a head_only run converges to without augmentation, and a
heuristic for the accuracy after fine-tuning, no more.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tlzoo.findings.logistic import accuracy, choose_l2, fit_path, standardized

KNN_K = 10


@dataclass
class ProbeResult:
    top1: float
    l2: float  # the penalty cross-validation chose
    cv_top1: float  # its mean held-out top-1 over the folds


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                 num_classes: int, l2: float | None = None) -> ProbeResult:
    """Validation top-1 of logistic regression fitted on the training features."""
    train_x, val_x = train_x.float(), val_x.float()
    cv_top1 = float("nan")
    if l2 is None:
        l2, cv_top1 = choose_l2(train_x, train_y, num_classes)
    xt, xv = standardized(train_x, val_x)
    weight, bias = fit_path(xt, train_y, num_classes, l2)
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
