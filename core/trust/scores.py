"""Out-of-distribution scores: higher means less like the training data. Each is a small torch module.

One module per method computes the score from a batch's pooled features and
logits. The same module runs after `tlzoo predict`'s forward pass and inside
an exported graph (as its second output), so a run directory and its exported
files give the same scores. The tensors a method needs (a bank of training
features, class means) are made by `fit_scorer` and stored with the run.
"""

from __future__ import annotations

import torch
from torch import nn

from tlzoo.trust.options import KnnOptions, MahalanobisOptions, METHOD_OPTIONS

TENSORS = {"knn": ("bank",), "mahalanobis": ("means", "precision"), "msp": (), "energy": (), "none": ()}


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    features = features.float()
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)


class MaxSoftmax(nn.Module):
    """1 - max softmax(logits / T) (Hendrycks and Gimpel, 2017), on the calibrated probabilities."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return 1.0 - (logits.float() / self.temperature).softmax(1).amax(1)


class Energy(nn.Module):
    """-logsumexp(logits) (Liu et al., NeurIPS 2020), at temperature 1 as published."""

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return -torch.logsumexp(logits.float(), 1)


class NearestNeighbour(nn.Module):
    """Euclidean distance between unit-length pooled features and the k-th nearest training one (Sun et al.,
    ICML 2022). `bank` holds unit-length training features (fp16 in storage, fp32 in the product)."""

    def __init__(self, bank: torch.Tensor, k: int):
        super().__init__()
        self.register_buffer("bank", bank)
        self.k = max(1, min(int(k), bank.shape[0]))

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        similarity = unit_rows(features) @ self.bank.float().t()
        kth = similarity.topk(self.k, dim=1).values[:, -1]
        return (2.0 - 2.0 * kth).clamp_min(0.0).sqrt()


class Mahalanobis(nn.Module):
    """Smallest Mahalanobis distance (squared) of the unit-length pooled feature to a class mean, with one
    shared, shrunk covariance (Lee et al., NeurIPS 2018, on the pooled features only)."""

    def __init__(self, means: torch.Tensor, precision: torch.Tensor):
        super().__init__()
        self.register_buffer("means", means)
        self.register_buffer("precision", precision)

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        f = unit_rows(features)
        projected = f @ self.precision
        own = (projected * f).sum(1, keepdim=True)
        means_term = ((self.means @ self.precision) * self.means).sum(1)[None, :]
        distances = own - 2.0 * projected @ self.means.t() + means_term
        return distances.amin(1)


def score_rows(scorer: nn.Module, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The scores one image at a time: a matrix product picks its kernel by batch size, so a batched score
    could differ in its last digits with the images beside it; predict, serve and the fit agree this way."""
    with torch.inference_mode():
        if not len(features):
            return torch.empty(0)
        return torch.cat([scorer(f, z) for f, z in zip(features.float().split(1), logits.float().split(1))])


def subset_rows(count: int, size: int, seed: int) -> torch.Tensor:
    """Indices of at most `size` of `count` rows: all of them, or a seeded random subset (sorted)."""
    if count <= size:
        return torch.arange(count)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=generator)[:size].sort().values


def fit_tensors(method: str, options, features: torch.Tensor | None, labels: torch.Tensor | None,
                num_classes: int) -> dict[str, torch.Tensor]:
    """What `method` keeps from the training features (already the subset to keep)."""
    if method == "knn":
        return {"bank": unit_rows(features).half()}
    if method == "mahalanobis":
        unit = unit_rows(features).double()
        means = torch.zeros(num_classes, unit.shape[1], dtype=torch.float64)
        centred = []
        for c in range(num_classes):
            rows = unit[labels == c]
            if len(rows):
                means[c] = rows.mean(0)
                centred.append(rows - means[c])
        centred = torch.cat(centred)
        covariance = centred.t() @ centred / max(1, len(centred))
        scale = float(covariance.diagonal().mean()) or 1.0
        shrunk = (1 - options.shrinkage) * covariance + options.shrinkage * scale * torch.eye(len(covariance),
                                                                                                 dtype=torch.float64)
        present = torch.bincount(labels, minlength=num_classes) > 0  # a class without images has no mean
        precision = torch.linalg.inv(shrunk)
        return {"means": means[present].float(), "precision": precision.float()}
    return {}


def build_scorer(method: str, options: dict, temperature: float, tensors: dict[str, torch.Tensor]) -> nn.Module | None:
    """The score module for a stored method; None for 'none'."""
    parsed = METHOD_OPTIONS[method].model_validate(options)
    if method == "msp":
        return MaxSoftmax(temperature)
    if method == "energy":
        return Energy()
    if method == "knn":
        assert isinstance(parsed, KnnOptions)
        return NearestNeighbour(tensors["bank"], parsed.k)
    if method == "mahalanobis":
        assert isinstance(parsed, MahalanobisOptions)
        return Mahalanobis(tensors["means"], tensors["precision"])
    return None
