"""Likely mislabelled images: out-of-fold probabilities of a linear probe, per-class thresholds.

In the style of confident learning (Northcutt et al., 2021), on the pooled
features: each training image is scored by a probe that never saw it (k-fold),
the other splits by a probe fitted on the whole training split. Class j's
threshold t_j is the mean probability the training images labelled j get for j:
a class the probe finds hard gets a low bar. Each probability is read against its
class's threshold (p_j / t_j), and an image is flagged when some other class
beats its given label on that scale; its score is by how much (0 when tied, about
1 when the other class is as sure as its own images usually are and the given
label gets nothing). `confident` says the suggested class also clears its
threshold outright (confident learning's own, stricter test: fewer flags, fewer
of them wrong).
"""

from __future__ import annotations

import torch

from tlzoo.findings.logistic import cross_validate, fit_path, standardized
from tlzoo.findings.issues import Issue

FOLDS = 5  # each probe sees 80 % of the training split; cleanlab's default too
WEAK_PROBE = 0.8  # out-of-fold top-1 under which most flags are images the features confuse (a note says so)


def probabilities(train_x: torch.Tensor, train_y: torch.Tensor, others: list[torch.Tensor], num_classes: int,
                  folds: int = FOLDS) -> tuple[torch.Tensor, list[torch.Tensor], dict]:
    """(out-of-fold probabilities of the training images, probabilities of each other split, the probe's L2,
    folds and out-of-fold top-1)."""
    folds = min(folds, _smallest_class(train_y, num_classes))
    cv = cross_validate(train_x, train_y, num_classes, folds=folds)
    standard = standardized(train_x, *others)
    weight, bias = fit_path(standard[0], train_y, num_classes, cv.l2) if others else (None, None)
    return (cv.held_out_logits.softmax(1), [(x @ weight + bias).softmax(1) for x in standard[1:]],
            {"probe_l2": cv.l2, "folds": folds, "probe_top1": round(cv.top1, 4)})


def _smallest_class(y: torch.Tensor, num_classes: int) -> int:
    """At least 2 folds, at most as many as the smallest present class has images (every fold holds each class)."""
    counts = torch.bincount(y, minlength=num_classes)
    return max(2, int(counts[counts > 0].min()))


def class_thresholds(probs: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """t_j: the mean probability of class j over the images labelled j (1 for an absent class: never cleared)."""
    thresholds = torch.ones(num_classes)
    for c in range(num_classes):
        rows = y == c
        if rows.any():
            thresholds[c] = probs[rows, c].mean()
    return thresholds


def suspects(probs: torch.Tensor, y: torch.Tensor, thresholds: torch.Tensor) -> list[tuple[int, int, float]]:
    """(row, suggested class, score) of every flagged image, most suspect first."""
    scaled = probs / thresholds.clamp_min(1e-6)
    given = scaled.gather(1, y[:, None]).squeeze(1)
    other = scaled.clone()
    other.scatter_(1, y[:, None], -1.0)
    best_other, suggested = other.max(1)
    flagged = (best_other > given).nonzero().flatten()
    found = [(int(i), int(suggested[i]), float(best_other[i] - given[i])) for i in flagged]
    return sorted(found, key=lambda row: -row[2])


def mislabelled_issues(splits, classes: list[str], folds: int = FOLDS) -> tuple[list[Issue], dict]:
    """Issues for every split (`splits[0]` is the training split), and the settings used."""
    train, others = splits[0], splits[1:]
    train_probs, other_probs, probe = probabilities(train.features, train.labels, [s.features for s in others],
                                                    len(classes), folds)
    thresholds = class_thresholds(train_probs, train.labels, len(classes))
    issues = []
    for split, probs in zip(splits, [train_probs, *other_probs]):
        for row, suggested, score in suspects(probs, split.labels, thresholds):
            label = int(split.labels[row])
            confident = bool(probs[row, suggested] >= thresholds[suggested])
            issues.append(Issue(
                "mislabelled", str(split.paths[row]), split.name, classes[label], score,
                f"p({classes[label]}) = {float(probs[row, label]):.3f}, p({classes[suggested]}) = "
                f"{float(probs[row, suggested]):.3f}" + (" out of fold" if split is train else "")
                + ("; confident" if confident else ""), suggested=classes[suggested]))
    issues.sort(key=lambda issue: -issue.score)
    return issues, {**probe,
                    "thresholds": {name: round(float(t), 4) for name, t in zip(classes, thresholds)}}


def weak_probe_note(settings: dict) -> list[str]:
    """A note when the probe itself is often wrong: its flags then say more about the features than the labels."""
    top1 = settings.get("probe_top1")
    if top1 is None or top1 >= WEAK_PROBE:
        return []
    return [f"the probe behind 'likely mislabelled' gets only {top1:.0%} of the training images right out of fold: "
            "most of its flags are images these features cannot tell apart, not wrong labels (read the confident "
            "ones first, or inspect with another backbone)"]
