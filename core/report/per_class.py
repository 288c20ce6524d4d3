"""Per-class precision, recall, F1 and support, and the most-confused pairs, from a confusion matrix.

Pure functions of the matrix (rows: true class, columns: predicted class), so
summary.json, `tlzoo evaluate --json` and the report agree by construction.
"""

from __future__ import annotations


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def per_class_metrics(classes: list[str], confusion: list[list[int]]) -> dict[str, dict]:
    """{class: {precision, recall, f1, support}}; None where a ratio has no denominator."""
    size = len(classes)
    out = {}
    for index, name in enumerate(classes):
        row = confusion[index] if index < len(confusion) else [0] * size
        true_positive = row[index] if index < len(row) else 0
        support = sum(row)
        predicted = sum(confusion[r][index] for r in range(len(confusion)) if index < len(confusion[r]))
        precision = _ratio(true_positive, predicted)
        recall = _ratio(true_positive, support)
        if precision is None or recall is None:
            f1 = None
        else:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return out


def macro_average(per_class: dict[str, dict], key: str) -> float | None:
    """Mean of `key` over the classes where it is defined."""
    values = [item[key] for item in per_class.values() if item[key] is not None]
    return sum(values) / len(values) if values else None


def most_confused(classes: list[str], confusion: list[list[int]], limit: int = 10) -> list[tuple[str, str, int]]:
    """(true, predicted, count) of the off-diagonal cells, largest first; ties in class order."""
    pairs = [(count, t, p) for t, row in enumerate(confusion) for p, count in enumerate(row) if t != p and count]
    pairs.sort(key=lambda item: (-item[0], item[1], item[2]))
    return [(classes[t], classes[p], count) for count, t, p in pairs[:limit]]
