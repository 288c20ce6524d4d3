"""Images per class, and the loss weights `train.class_weights: "balanced"` gives them."""

from __future__ import annotations

from pathlib import Path

import torch


def class_counts(items: list[tuple[Path, int]], num_classes: int) -> torch.Tensor:
    return torch.bincount(torch.tensor([label for _, label in items], dtype=torch.long), minlength=num_classes)


def class_weights(train: list[tuple[Path, int]], num_classes: int) -> torch.Tensor:
    """'balanced': N / (C x n_c), as scikit-learn defines it; 0 for a class with no images."""
    counts = class_counts(train, num_classes)
    weights = torch.zeros(num_classes)
    present = counts > 0
    weights[present] = len(train) / (num_classes * counts[present].float())
    return weights
