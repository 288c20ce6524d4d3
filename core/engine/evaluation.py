"""Evaluating a reloaded run: which images (its own validation split or a folder of class folders) and the report.

`tlzoo evaluate` and `tlzoo.load(...).evaluate(...)` both come here, so the two
never differ in how data is rebuilt or how the metrics are reported. `option`
is how the caller names the data argument in messages ("--data" or "data").
"""

from __future__ import annotations

from pathlib import Path

from tlzoo.engine.inference import LoadedRun, evaluate_records
from tlzoo.errors import TlzooError


def validation_items(run_dir: Path, meta: dict, registry) -> tuple[list[tuple[Path, int]], int | str]:
    """The run's own validation split, read again through its reader, and the run's loader worker setting."""
    from tlzoo.data.labelled import load_labelled
    from tlzoo.rundir import outputs
    from tlzoo.spec import resolve_spec

    raw = outputs.read_json(run_dir / outputs.SPEC_FILE, "resolved spec")
    resolved = resolve_spec(raw, registry, Path(meta["spec_dir"]), str(run_dir / outputs.SPEC_FILE))
    data = load_labelled(resolved)
    if data.classes != meta["classes"]:
        raise TlzooError(f"the data now has classes {data.classes}, the run was trained on {meta['classes']}",
                         "evaluate on the data the run used, or pass a data folder with the same class folders")
    return data.val, resolved.spec.data.num_workers


def folder_items(folder: Path, classes: list[str], registry, option: str = "--data") -> list[tuple[Path, int]]:
    """A folder with one sub-folder per class, named as in the run; labels are the run's class indices."""
    from tlzoo.data.labelled import load_labelled
    from tlzoo.spec import resolve_spec

    folder = Path(folder)
    if not folder.is_dir():
        raise TlzooError(f"{option} {folder} is not a folder", "pass a folder with one sub-folder per class")
    raw = {"data": {"reader": {"name": "imagefolder", "options": {"root": str(folder.resolve()),
                                                                   "train": ".", "val": "."}}}}
    data = load_labelled(resolve_spec(raw, registry, folder.resolve(), f"{option} {folder}"))
    unknown = sorted(set(data.classes) - set(classes))
    if unknown:
        raise TlzooError(f"{option} {folder} has class folder(s) the run never saw: {', '.join(unknown)}",
                         f"the run's classes are: {', '.join(classes)}")
    index = {name: classes.index(name) for name in data.classes}
    return [(path, index[data.classes[label]]) for path, label in data.val]


def evaluate_run(loaded: LoadedRun, registry, data: Path | None = None, option: str = "--data", log=None):
    """Evaluate `loaded` on `data` (None: the run's validation split); returns (EvalResult, JSON-able report)."""
    if data is None:
        items, workers = validation_items(loaded.run_dir, loaded.sidecar, registry)
    else:
        items, workers = folder_items(Path(data), loaded.classes, registry, option), "auto"
    if not items:
        raise TlzooError("there are no images to evaluate", f"check {option} or the run's validation split")
    result, records, trust = evaluate_records(loaded, items, workers, log=log)
    result.extra["records"] = records  # per image (tlzoo.report.records.ImageRecord): --per-image, tlzoo report
    report = metrics_report(result, loaded.classes)
    if trust is not None:  # `loss` stays the model's own cross-entropy, as in training; calibration.after is T's
        report.update(trust)
    return result, report


def metrics_report(result, classes: list[str]) -> dict:
    """What `tlzoo evaluate --json` prints for an EvalResult: metrics, per-class figures, confusion matrix."""
    from tlzoo.report.per_class import per_class_metrics

    report = {"images": result.count, **result.metrics("")}
    report["per_class_accuracy"] = dict(zip(classes, result.per_class_accuracy))
    report["per_class"] = per_class_metrics(classes, result.confusion)  # precision, recall, F1, support
    report["confusion_matrix"] = result.confusion
    return report
