"""Temperature scaling (Guo et al., ICML 2017) and the figures that say whether probabilities mean what they say.

A temperature T divides the logits before the softmax: the predicted class never
changes, only how sure the probabilities are. It is fitted by minimising the
negative log-likelihood on held-out logits. The NLL of softmax(beta * z) is convex
in beta = 1 / T (log-sum-exp of a linear function), so a safeguarded Newton search
on beta finds the one minimum, deterministically, in float64.
"""

from __future__ import annotations

import math

import torch

ECE_BINS = 15  # equal-width confidence bins, as in Guo et al.


def _nll_and_derivatives(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> tuple[float, float, float]:
    """Mean NLL of softmax(beta * logits) and its first two derivatives in beta."""
    scaled = logits * beta
    log_probs = scaled.log_softmax(1)
    probs = log_probs.exp()
    true = logits.gather(1, labels[:, None]).squeeze(1)
    mean_z = (probs * logits).sum(1)
    var_z = (probs * logits.square()).sum(1) - mean_z.square()
    nll = -log_probs.gather(1, labels[:, None]).mean()
    return float(nll), float((mean_z - true).mean()), float(var_z.clamp_min(0).mean())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, min_temperature: float = 0.25,
                    max_temperature: float = 10.0) -> float:
    """The T in [min_temperature, max_temperature] minimising the mean NLL of softmax(logits / T).

    With no logits, or logits that carry no information (all equal), T is 1.
    """
    logits = logits.detach().double().cpu()
    labels = labels.detach().long().cpu()
    if logits.numel() == 0 or float(logits.std(1).max() if logits.shape[1] > 1 else 0) == 0.0:
        return 1.0
    low, high = 1.0 / max_temperature, 1.0 / min_temperature  # bounds on beta
    beta = min(max(1.0, low), high)
    for _ in range(100):
        _, slope, curve = _nll_and_derivatives(logits, labels, beta)
        if slope > 0:  # the minimum lies below beta
            high = beta
        else:
            low = beta
        step = beta - slope / curve if curve > 0 else math.nan
        beta = step if low < step < high else (low + high) / 2  # Newton inside the bracket, else bisection
        if high - low < 1e-12 * max(1.0, beta):
            break
    return 1.0 / beta


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true class under softmax(logits / T)."""
    if labels.numel() == 0:
        return math.nan
    return float(torch.nn.functional.cross_entropy(logits.double() / temperature, labels.long()))


def brier(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over images of the squared distance between the probability vector and the one-hot truth
    (the multi-class Brier score: 0 is perfect, 2 the worst)."""
    if labels.numel() == 0:
        return math.nan
    onehot = torch.nn.functional.one_hot(labels.long(), probs.shape[1]).double()
    return float((probs.double() - onehot).square().sum(1).mean())


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin (lo, hi]: images, accuracy and mean confidence (None when empty)."""
    confidence, predicted = probs.double().max(1)
    correct = (predicted == labels.long()).double()
    # bin b holds confidences in (b / bins, (b + 1) / bins]; a confidence of exactly 0 cannot occur
    index = (confidence * bins).ceil().long().clamp(1, bins) - 1
    rows = []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        rows.append({"lo": b / bins, "hi": (b + 1) / bins, "count": count,
                     "accuracy": float(correct[inside].mean()) if count else None,
                     "confidence": float(confidence[inside].mean()) if count else None})
    return rows


def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| over the bins."""
    total = labels.numel()
    if total == 0:
        return math.nan
    return sum(row["count"] / total * abs(row["accuracy"] - row["confidence"])
               for row in reliability(probs, labels, bins) if row["count"])


def figures(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict:
    """ECE (15 bins), NLL and Brier of softmax(logits / T), and the images they come from."""
    probs = (logits.double() / temperature).softmax(1)
    return {"images": int(labels.numel()), "ece": ece(probs, labels), "nll": nll(logits, labels, temperature),
            "brier": brier(probs, labels)}


def before_after(logits: torch.Tensor, labels: torch.Tensor, temperature: float, split: str) -> dict:
    """The figures at T = 1 and at the fitted T on one split, saying which split."""
    return {"split": split, "before": figures(logits, labels, 1.0), "after": figures(logits, labels, temperature)}


def change_text(before: dict, after: dict) -> str:
    """'ECE a -> b, NLL c -> d, Brier e -> f': the figures before and after the temperature, for one line."""
    return ", ".join(f"{name} {before[key]:.4f} -> {after[key]:.4f}"
                     for key, name in (("ece", "ECE"), ("nll", "NLL"), ("brier", "Brier")))
