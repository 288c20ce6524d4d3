"""The report page: a context from RunData, rendered with the report.html template, figures beside it."""

from __future__ import annotations

import datetime
from importlib import resources
from pathlib import Path

import jinja2

from tlzoo.errors import TlzooError
from tlzoo.report import figures
from tlzoo.report.findings_section import render_section
from tlzoo.report.per_class import macro_average, most_confused, per_class_metrics
from tlzoo.report.records import top_losses
from tlzoo.report.rundata import RunData
from tlzoo.report.thumbnails import data_uri, thumbnail_uri
from tlzoo.report.trust_section import trust_section

TEMPLATE = "report.html"
WEAK_F1 = 0.8


def _fixed(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(float(seconds), 60)
    return f"{int(minutes)} min {rest:.0f} s" if minutes else f"{rest:.1f} s"


def _component(ref) -> str:
    if isinstance(ref, str):
        return ref
    options = ", ".join(f"{k}={v}" for k, v in (ref.get("options") or {}).items())
    return ref.get("name", "?") + (f" ({options})" if options else "")


def glance(data: RunData) -> list[dict]:
    spec, summary, best_meta = data.spec, data.summary, data.best or {}
    best = summary.get("best") or {}
    versions = best_meta.get("versions") or {}
    epochs = summary.get("epochs_run")
    best_epoch = summary.get("best_epoch")
    tiles = [
        ("val top-1", _fixed(best.get("val_top1")), True),
        ("val top-5", _fixed(best.get("val_top5")), True),
        ("val loss", _fixed(best.get("val_loss")), False),
        ("kept epoch (the last)" if summary.get("keep") == "last" else "best epoch",
         f"{best_epoch if best_epoch is not None else '-'} of {epochs}"
         + (" (stopped early)" if summary.get("stopped_early") else ""), False),
        ("backbone", _component(spec.get("backbone", {})), False),
        ("weights", str(best_meta.get("weights_source") or (spec.get("backbone") or {}).get("weights", "-")), False),
        ("strategy", _component((spec.get("train") or {}).get("strategy", "-")), False),
        ("data", f"{summary.get('num_train', '-')} train, {summary.get('num_val', '-')} val, "
                 f"{len(data.classes)} classes", False),
        ("skipped files", str(summary.get("skipped", len(data.skipped))), False),
        ("time", _duration(summary.get("seconds")), False),
        ("versions", f"tlzoo {versions.get('tlzoo', '?')}, torch {versions.get('torch', '?')}", False),
        ("evaluated on", data.evaluated_on, False),
    ]
    if data.other_data:  # `tlzoo report --data`: the figures and counts of that data lead; the run's follow
        tiles = other_data_tiles(data.other_data, best) + tiles[3:]
        tiles[[label for label, _, _ in tiles].index("data")] = (
            "data", f"{data.other_data['images']} images evaluated, {len(data.classes)} classes (the run: "
                    f"{summary.get('num_train', '-')} train, {summary.get('num_val', '-')} val)", False)
    test = summary.get("test")
    if test:  # a held-out test split, scored once with the best model
        tiles.insert(3, (f"test top-1 ({test.get('count', '?')} held-out images)", _fixed(test.get("top1")), True))
    refit = summary.get("refit")
    if refit:  # train.refit: the kept model is not the one the validation figures describe
        tiles.append(("refit", f"epochs 1-{refit.get('epoch')} trained again on {refit.get('train_images')} train + "
                               "val images: the model kept and tested; the validation figures are the model's "
                               "before", False))
    return [{"label": label, "value": value, "key": key} for label, value, key in tiles]


def other_data_tiles(other: dict, best: dict) -> list[tuple[str, str, bool]]:
    """The evaluated data's top-1, top-5 and loss, then the run's own validation top-1 beside them."""
    return [("top-1", _fixed(other.get("top1")), True), ("top-5", _fixed(other.get("top5")), True),
            ("loss", _fixed(other.get("loss")), False),
            ("the run's val top-1 (best epoch)", _fixed(best.get("val_top1")), False)]


def class_rows(classes: list[str], confusion: list[list[int]]) -> tuple[list[dict], dict]:
    metrics = per_class_metrics(classes, confusion)
    rows = [{"name": name, "precision": _fixed(m["precision"], 3), "recall": _fixed(m["recall"], 3),
             "f1": _fixed(m["f1"], 3), "support": m["support"], "f1_value": m["f1"],
             "weak": m["f1"] is not None and m["f1"] < WEAK_F1} for name, m in metrics.items()]
    rows.sort(key=lambda row: (row["f1_value"] is None, row["f1_value"] if row["f1_value"] is not None else 0))
    macro = {key: _fixed(macro_average(metrics, key), 3) for key in ("precision", "recall", "f1")}
    return rows, macro


def confused_pairs(classes: list[str], confusion: list[list[int]], limit: int = 15) -> list[dict]:
    totals = {name: sum(row) for name, row in zip(classes, confusion)}
    return [{"true": t, "predicted": p, "count": n, "share": f"{n / totals[t]:.1%}" if totals[t] else "-"}
            for t, p, n in most_confused(classes, confusion, limit)]


def build_context(data: RunData, top_count: int) -> tuple[dict, dict[str, bytes]]:
    """The template's values, and the PNG files to write beside the page (name suffix -> bytes)."""
    classes, confusion = data.classes, data.confusion
    pngs: dict[str, bytes] = {}
    if data.metrics:
        pngs["curves"] = figures.curves_png(data.metrics)
    has_matrix = bool(classes) and len(confusion) == len(classes) and any(map(any, confusion))
    if has_matrix:
        pngs["confusion"] = figures.confusion_png(classes, confusion, normalise=False)
        pngs["confusion-normalised"] = figures.confusion_png(classes, confusion, normalise=True)
    shown = len(figures.matrix_classes_for(len(classes))) if classes else 0
    note = (f"Rows are true classes, columns predicted ones; {data.evaluated_on}."
            + (f" With {len(classes)} classes the figures show the {shown} classes with the most errors;"
               " the table below lists every class." if shown < len(classes) else ""))
    trust, reliability = trust_section(data.summary)
    if reliability is not None:
        pngs["reliability"] = reliability
    rows, macro = class_rows(classes, confusion) if has_matrix else ([], {"precision": "-", "recall": "-", "f1": "-"})
    losses = [{"path": r.path, "name": Path(r.path).name, "true": r.true, "predicted": r.predicted,
               "correct": r.correct, "probability": f"{r.probability:.3f}", "loss": f"{r.loss:.3f}",
               "thumbnail": thumbnail_uri(Path(r.path))} for r in top_losses(data.records, top_count)]
    context = {
        "title": (data.spec.get("name") or data.run_dir.name),
        "run_dir": str(data.run_dir),
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "glance": glance(data),
        "curves": data_uri(pngs["curves"], "image/png") if "curves" in pngs else None,
        "unfrozen": figures.unfreeze_epochs(data.metrics),
        "confusion_note": note,
        "confusion_counts": data_uri(pngs["confusion"], "image/png") if has_matrix else None,
        "confusion_normalised": data_uri(pngs["confusion-normalised"], "image/png") if has_matrix else None,
        "confused": confused_pairs(classes, confusion) if has_matrix else [],
        "per_class": rows,
        "macro": macro,
        "weak_f1": WEAK_F1,
        "top_losses": losses,
        "top_losses_of": data.images_shown,
        "top_losses_note": "No per-image records: the run has no best model to evaluate."
                           if not data.records else "top_losses is 0 in the spec's report settings.",
        "skipped": data.skipped,
        "sections": data.sections,
        "trust": trust,
        "reliability": data_uri(reliability, "image/png") if reliability is not None else None,
        "findings_section": None if data.findings is None else render_section(data.findings, "issues.csv", (
            "The run's own data (not the images evaluated above), from" if data.other_data else "From")
            + " the pretrained backbone's pooled features and perceptual hashes:"),
    }
    return context, pngs


def render(context: dict) -> str:
    source = resources.files("tlzoo.report").joinpath(TEMPLATE).read_text(encoding="utf-8")
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
    return environment.from_string(source).render(**context)


def write_report(data: RunData, out: Path, top_count: int = 16) -> Path:
    """Write `out` (one self-contained HTML file) and its figures as `<stem>-<figure>.png` beside it."""
    out = Path(out)
    context, pngs = build_context(data, top_count)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for suffix, png in pngs.items():
            (out.parent / f"{out.stem}-{suffix}.png").write_bytes(png)
        out.write_text(render(context), encoding="utf-8")
    except OSError as exc:
        raise TlzooError(f"cannot write {exc.filename or out}: {exc.strerror}",
                         "free some space, or write the report elsewhere: tlzoo report RUN_DIR --out FILE") from None
    return out
