"""The report's figures as PNG bytes: training curves and confusion matrices (matplotlib, Agg backend)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display: figures are only ever written to files

from matplotlib.figure import Figure  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

# Above this many classes a confusion matrix shows only the most-confused ones:
# 100 labelled rows are unreadable in a page-wide figure.
MAX_MATRIX_CLASSES = 30
DPI = 100
# Tick labels longer than this are cut in the middle: a 1000-character class name would leave the
# matrix no room at all (matplotlib refuses margins that cross); the tables keep the whole name.
MAX_LABEL = 32


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)  # fixed margins: a tight bbox pass costs seconds on a slow CPU
    return buffer.getvalue()


def unfreeze_epochs(metrics: list[dict]) -> list[int]:
    """Epochs (1-based) in which more parameter groups trained than in the epoch before."""
    marks, previous = [], None
    for record in metrics:
        groups = record.get("trainable_groups")
        if previous is not None and groups is not None and groups > previous:
            marks.append(record["epoch"])
        previous = groups if groups is not None else previous
    return marks


def trains(record: dict, group: int, group_count: int) -> bool:
    """Whether parameter group `group` (0 = stem, last = head) trained in the epoch of `record`."""
    trainable = record.get("trainable_groups")
    return trainable is None or group >= group_count - trainable


def _series(metrics: list[dict], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["epoch"], r[key]) for r in metrics if r.get(key) is not None]
    return [e for e, _ in pairs], [v for _, v in pairs]


def curves_png(metrics: list[dict]) -> bytes:
    """Loss, accuracy, learning rate per parameter group and trainable parameters, per epoch."""
    figure = Figure(figsize=(11, 6.5))  # not pyplot: no global figure registry to keep or close
    axes = figure.subplots(2, 2)
    loss, accuracy, rates, params = axes.flat
    for key, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
        loss.plot(*_series(metrics, key), marker="o", markersize=3, label=label)
    for key, label in (("val_top1", "val top-1"), ("val_top5", "val top-5")):
        epochs, values = _series(metrics, key)
        if values:
            accuracy.plot(epochs, values, marker="o", markersize=3, label=label)
    group_count = max((len(r.get("lr") or []) for r in metrics), default=0)
    for group in range(group_count):
        # a frozen group's scheduled rate moves nothing: only epochs in which the group trains are drawn
        pairs = [(r["epoch"], r["lr"][group]) for r in metrics
                 if len(r.get("lr") or []) > group and trains(r, group, group_count)]
        if not pairs:
            continue
        label = "head" if group == group_count - 1 else f"group {group}"
        rates.plot([e for e, _ in pairs], [v for _, v in pairs], label=label, marker="o", markersize=2,
                   linewidth=2 if label == "head" else 1)
    if any(v > 0 for r in metrics for v in r.get("lr") or []):
        rates.set_yscale("log")
        rates.minorticks_off()  # a log axis draws dozens of minor ticks; they cost a second and say little
    params.plot(*_series(metrics, "trainable_params"), marker="o", markersize=3, color="tab:purple")
    titles = ("loss", "validation accuracy", "learning rate of each training parameter group", "trainable parameters")
    for axis, title in zip(axes.flat, titles):
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        for epoch in unfreeze_epochs(metrics):
            axis.axvline(epoch - 0.5, color="tab:red", linestyle="--", linewidth=1)
        if axis.get_legend_handles_labels()[0] and axis is not params:
            axis.legend(fontsize=8, ncol=2 if axis is rates and group_count > 6 else 1)
    if unfreeze_epochs(metrics):
        figure.text(0.5, 0.01, "dashed red lines: epochs where more parameter groups were unfrozen",
                    ha="center", fontsize=9, color="tab:red")
    figure.subplots_adjust(left=0.07, right=0.98, top=0.95, bottom=0.1, hspace=0.45, wspace=0.18)
    return _png(figure)


def matrix_classes(confusion: np.ndarray, limit: int = MAX_MATRIX_CLASSES) -> list[int]:
    """All classes when few; else the `limit` with the most errors (as true or as predicted), in class order."""
    size = confusion.shape[0]
    if size <= limit:
        return list(range(size))
    off = confusion - np.diag(np.diag(confusion))
    errors = off.sum(0) + off.sum(1)
    chosen = sorted(range(size), key=lambda i: (-errors[i], i))[:limit]
    return sorted(chosen)


def matrix_classes_for(size: int, limit: int = MAX_MATRIX_CLASSES) -> range:
    """How many classes a matrix of `size` classes shows (which ones depends on the errors)."""
    return range(min(size, limit))


def short_label(name: str, limit: int = MAX_LABEL) -> str:
    """`name` as it fits a tick label: its start and end around an ellipsis when longer than `limit`."""
    if len(name) <= limit:
        return name
    tail = (limit - 1) // 3
    return name[:limit - 1 - tail] + "\u2026" + name[len(name) - tail:]


def confusion_png(classes: list[str], confusion: list[list[int]], normalise: bool) -> bytes:
    """Counts, or rows divided by their total (recall on the diagonal); large sets keep the most-confused classes."""
    matrix = np.asarray(confusion, dtype=float).reshape(len(classes), len(classes))
    keep = matrix_classes(matrix)
    rows = matrix.sum(1, keepdims=True)
    shown = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0) if normalise else matrix
    shown = shown[np.ix_(keep, keep)]
    names = [short_label(classes[i]) for i in keep]
    side = min(11.0, max(4.5, 0.32 * len(keep) + 2.5))
    label_inches = 0.075 * max(len(name) for name in names) + 0.6  # room for the longest tick label
    figure = Figure(figsize=(side + 1.2 + label_inches, side + label_inches))
    axis = figure.subplots()
    figure.subplots_adjust(left=label_inches / (side + 1.2 + label_inches), bottom=label_inches / (side + label_inches),
                           right=0.9, top=0.94)
    image = axis.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else max(shown.max(), 1))
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    font = 10 if len(keep) <= 15 else 8
    axis.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=font)
    axis.set_yticks(range(len(names)), names, fontsize=font)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    what = "row-normalised" if normalise else "counts"
    scope = f", the {len(keep)} most-confused of {len(classes)} classes" if len(keep) < len(classes) else ""
    axis.set_title(f"confusion matrix ({what}{scope})", fontsize=11)
    if len(keep) <= 15:  # numbers in the cells only while they fit
        threshold = (1 if normalise else shown.max()) / 2
        for (row, col), value in np.ndenumerate(shown):
            if value:
                axis.text(col, row, f"{value:.2f}" if normalise else f"{int(value)}", ha="center", va="center",
                          fontsize=9, color="white" if value > threshold else "black")
    return _png(figure)
