"""Class balance: images per class and split, the smallest classes, what class_weights "balanced" changes."""

from __future__ import annotations

from tlzoo.data.class_balance import class_counts, class_weights
from tlzoo.findings.issues import Balance, Issue

SMALL = 0.5  # a training class with under half the median class's images is reported
SHOWN = 5  # smallest classes named in the balance summary


def balance_of(splits, classes: list[str]) -> Balance:
    train = splits[0]
    items = [(None, int(label)) for label in train.labels]
    counts = {s.name: class_counts([(None, int(label)) for label in s.labels], len(classes)).tolist() for s in splits}
    train_counts = counts[train.name]
    order = sorted(range(len(classes)), key=lambda c: (train_counts[c], classes[c]))
    present = [count for count in train_counts if count]
    ratio = max(train_counts) / min(train_counts) if min(train_counts) > 0 else None
    weights = class_weights(items, len(classes)).tolist() if present else [0.0] * len(classes)
    return Balance(classes, counts, [round(w, 4) for w in weights], [classes[c] for c in order[:SHOWN]],
                   None if ratio is None else round(ratio, 4))


def small_class_issues(balance: Balance, train_name: str) -> list[Issue]:
    counts = balance.counts[train_name]
    ordered = sorted(counts)
    median = ordered[len(ordered) // 2] if ordered else 0
    issues = []
    for name, count, weight in zip(balance.classes, counts, balance.weights):
        if count < SMALL * median:
            issues.append(Issue("small_class", "", train_name, name, median / max(count, 1),
                                f"{count} training images against a median of {median}; class_weights "
                                f"'balanced' would weigh each of them {weight:.2f} (1 is an average image)"))
    issues.sort(key=lambda issue: -issue.score)
    return issues
