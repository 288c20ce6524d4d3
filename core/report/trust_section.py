"""The report's "Can you trust the probabilities?" section: reliability diagram, calibration figures, share kept.

Self-contained: it reads summary.json's `trust` part (tlzoo.engine.trust_fit
wrote it) and gives the template its values and one PNG; nothing else of the
report depends on it, and a run without trust data gets a line saying so.
"""

from __future__ import annotations

from tlzoo.report.figures import DPI, Figure, _png


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _fixed(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def reliability_png(figures: dict, split: str, temperature: float) -> bytes:
    """Accuracy against confidence in 15 equal-width bins, before and after the temperature; bar width ~ count."""
    figure = Figure(figsize=(10, 4.2), dpi=DPI)
    axes = figure.subplots(1, 2, sharey=True)
    for axis, when, title in zip(axes, ("before", "after"), ("before (temperature 1)",
                                                             f"after (temperature {temperature:.3f})")):
        bins = figures[when]["reliability"]
        total = max(1, sum(bins["count"]))
        width = 1 / len(bins["count"])
        for index, (count, accuracy, confidence) in enumerate(zip(bins["count"], bins["accuracy"],
                                                                  bins["confidence"])):
            if not count:
                continue
            left = index * width
            axis.bar(left, accuracy, width=width, align="edge", color="tab:blue",
                     alpha=0.35 + 0.65 * count / total, edgecolor="white")
            axis.plot(confidence, accuracy, "o", color="tab:orange", markersize=3)
        axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence (largest probability)")
        axis.set_title(f"{title}: ECE {figures[when]['ece']:.3f}", fontsize=10)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(f"accuracy on {split}")
    figure.text(0.5, 0.01, "bars: accuracy per confidence bin (darker: more images); dots: mean confidence; "
                "dashed: perfect calibration", ha="center", fontsize=8, color="#5b6875")
    figure.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.18, wspace=0.08)
    return _png(figure)


def trust_section(summary: dict) -> tuple[dict | None, bytes | None]:
    """(the template's `trust` values, the reliability PNG), or (None, None) for a run without trust data."""
    trust = summary.get("trust")
    if not trust:
        return None, None
    cal = trust["calibration"]
    splits = [name for name in ("test", "val") if name in cal]
    shown = splits[0]
    rows = [{"split": "held-out test" if name == "test" else "validation (the temperature was fitted here)",
             "images": cal[name]["before"]["images"],
             **{f"{key}_{when}": _fixed(cal[name][when][key]) for key in ("ece", "nll", "brier")
                for when in ("before", "after")}} for name in splits]
    unknown = trust.get("unknown")
    kept = None
    if unknown:
        kept = {"method": unknown["method"], "keep": _pct(unknown["keep"]), "threshold": f"{unknown['threshold']:.4g}",
                "val": _pct(unknown["val_kept"]), "val_images": unknown["val_images"],
                "test": _pct(unknown.get("test_kept")) if "test_kept" in unknown else None,
                "test_images": unknown.get("test_images")}
    context = {"method": cal["method"], "temperature": f"{cal['temperature']:.3f}", "rows": rows, "kept": kept,
               "figure_split": "the held-out test split" if shown == "test" else "the validation split"}
    return context, reliability_png(cal[shown], "test" if shown == "test" else "validation", cal["temperature"])
