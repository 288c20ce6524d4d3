"""Evaluating an exported file (.onnx, .pt2) on labelled images, as `tlzoo evaluate RUN_DIR` does a run.

The labelled images are a folder of class folders (`--data`), or the run's own
validation split when the file sits in the run directory it was exported from.
The file is fed exactly as for predicting (its metadata's preprocessing), and
the report has the same keys as a run's, so the two can be compared directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tlzoo.data.images import load_rgb
from tlzoo.engine.evaluation import folder_items, metrics_report, validation_items
from tlzoo.engine.metrics import summarize
from tlzoo.engine.per_image import records_from_logits
from tlzoo.errors import TlzooError
from tlzoo.export.predicting import BATCH, ExportedModel, load_exported
from tlzoo.rundir import outputs
from tlzoo.rundir.sidecar import read_model_sidecar
from tlzoo.trust.record import evaluation_figures


def exported_items(model: ExportedModel, registry, data: Path | None, option: str) -> list[tuple[Path, int]]:
    """(image, class index) pairs to evaluate `model` on: `data`, else its run directory's validation split."""
    if data is not None:
        return folder_items(Path(data), model.classes, registry, option)
    run_dir = model.path.resolve().parent
    which = (model.metadata.get("source") or {}).get("model")
    which = which if which in ("best", "last") else "best"
    if not ((run_dir / outputs.SPEC_FILE).is_file() and (run_dir / f"{which}.safetensors").is_file()):
        raise TlzooError(f"{model.path} is not inside the run directory it was exported from, so there is no "
                         "validation split to evaluate it on",
                         f"pass labelled images: {option} FOLDER (one sub-folder per class)")
    meta = read_model_sidecar(run_dir, which)
    if list(meta["classes"]) != model.classes:
        raise TlzooError(f"{model.path} has other classes than the run in {run_dir}",
                         f"pass labelled images with {option} FOLDER, or evaluate the run directory itself")
    return validation_items(run_dir, meta, registry)[0]


def exported_outputs(model: ExportedModel, items: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The file's logits for each image, in order, and its OOD scores when it gives them; an image that cannot
    be read stops the evaluation."""
    chunks, scores, rows = [], [], []

    def flush():
        if rows:
            outputs = [np.asarray(o, dtype=np.float32) for o in model.run(np.stack(rows))]
            logits = outputs[0]
            if logits.ndim != 2 or logits.shape[1] != len(model.classes):
                raise TlzooError(f"{model.path} gives logits of shape {logits.shape} for {len(model.classes)} "
                                 "classes", "the file does not match its metadata; export the run again")
            chunks.append(torch.from_numpy(logits.copy()))
            if len(outputs) == 2:
                scores.append(torch.from_numpy(outputs[1].reshape(-1).copy()))
            rows.clear()

    for path, _ in items:
        try:
            image = load_rgb(path, background=model.background)
        except (TlzooError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "message", None) or str(exc)
            raise TlzooError(f"cannot evaluate on {path}: {reason}", "remove the file or fix it") from None
        rows.append(model.host(image))
        if len(rows) == BATCH:
            flush()
    flush()
    return (torch.cat(chunks) if chunks else torch.empty(0, len(model.classes)),
            torch.cat(scores) if scores else None)


def evaluate_exported(path: Path | str | ExportedModel, registry, data: Path | None = None, option: str = "--data"):
    """(EvalResult with extra["records"], the JSON report) of an exported file on labelled images."""
    model = path if isinstance(path, ExportedModel) else load_exported(path)
    items = exported_items(model, registry, data, option)
    if not items:
        raise TlzooError("there are no images to evaluate", f"check {option} or the run's validation split")
    logits, scores = exported_outputs(model, items)
    labels = torch.tensor([label for _, label in items], dtype=torch.long)
    result = summarize(logits, labels, len(model.classes))
    trust = model.trust
    temperature = float(trust["calibration"]["temperature"]) if trust else 1.0
    result.extra["records"] = records_from_logits(items, logits / temperature, labels, model.classes)
    report = metrics_report(result, model.classes)
    if trust is not None:  # as for a run directory: the model's own loss, calibration and the share kept beside it
        report.update(evaluation_figures(trust, logits, labels, scores))
    return result, report
