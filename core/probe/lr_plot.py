"""The range test's figure: loss against learning rate (log axis), with the suggestions marked."""

from __future__ import annotations

from pathlib import Path

from tlzoo.probe.lr_range import RULES


def plot_range_test(test, path: Path, rule: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    axes = figure.add_subplot()
    axes.plot(test.lrs, test.losses, color="#bbbbbb", linewidth=0.8, label="loss")
    axes.plot(test.lrs, test.smoothed, color="#1f77b4", linewidth=1.6, label="smoothed loss")
    colours = {"valley": "#d62728", "steepest": "#2ca02c"}
    for name in RULES:
        lr = test.suggestion(name)
        if lr is not None:
            axes.axvline(lr, color=colours[name], linestyle="-" if name == rule else "--", linewidth=1,
                         label=f"{name}: {lr:.2g}" + (" (suggested)" if name == rule else ""))
    axes.set_xscale("log")
    axes.minorticks_off()
    axes.set_xlabel("learning rate (train.optimizer.lr)")
    axes.set_ylabel("training loss")
    if test.smoothed:  # the diverging tail would squash the interesting part
        low, start = min(test.smoothed), test.smoothed[0]
        axes.set_ylim(low - 0.1 * abs(start - low) - 1e-3, max(start, low) + 0.5 * abs(start - low) + 1e-3)
    axes.legend(loc="upper left", fontsize=8)
    axes.set_title("learning-rate range test")
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path
