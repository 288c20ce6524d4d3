"""A threshold on an out-of-distribution score that keeps a stated share of known images.

Scores grow with how unlike the training data an image is; an image is unknown
when its score is ABOVE the threshold. The threshold is the smallest validation
score that keeps at least `keep` of the validation images (the known ones), so
on validation the kept share is ceil(keep * n) / n or more (ties keep more).

What a run stores is the sorted validation scores (all of them up to
TABLE_LIMIT, else that many evenly spaced order statistics): any other kept
share (`--keep 0.99`) is then chosen the same way later, by anyone, and a stored
threshold can be checked against the table it came from.

The threshold is one validation image's own score, so that image sits exactly on
it, and the float noise between backends (bf16 or fp32, eager, onnxruntime) would
flip its decision from one to the next. A score within TIE (relative to
max(1, |threshold|)) of the threshold counts as at it: known.
"""

from __future__ import annotations

import math

import torch

TABLE_LIMIT = 1024
TIE = 1e-5


def cutoff(threshold: float) -> float:
    """The score above which an image is unknown: the threshold and a tie (TIE) more."""
    return threshold + TIE * max(1.0, abs(threshold))


def above(score: float, threshold: float) -> bool:
    """One image's decision: unknown when its score is above the threshold by more than a tie."""
    return score > cutoff(threshold)


def score_table(scores: torch.Tensor, limit: int = TABLE_LIMIT) -> list[float]:
    """The validation scores sorted ascending; above `limit` of them, `limit` evenly spaced order statistics
    from the lowest to the highest."""
    ordered = scores.detach().double().flatten().sort().values
    n = ordered.numel()
    if n > limit:
        positions = torch.linspace(0, n - 1, limit, dtype=torch.float64).round().long()
        ordered = ordered[positions]
    return [float(v) for v in ordered]


def threshold_for(keep: float, table: list[float]) -> float:
    """The smallest table value t with at least `keep` of the table at or below it."""
    if not table:
        raise ValueError("no validation scores to choose a threshold from")
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], not {keep}")
    index = min(len(table), max(1, math.ceil(keep * len(table) - 1e-9))) - 1
    return float(table[index])


def kept_share(scores: torch.Tensor, threshold: float) -> float:
    """The share of `scores` at or below `threshold`, ties included (the images that are not called unknown)."""
    if scores.numel() == 0:
        return math.nan
    return float((scores.double() <= cutoff(threshold)).double().mean())


def is_unknown(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    return scores.double() > cutoff(threshold)
