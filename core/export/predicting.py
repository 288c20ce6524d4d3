"""Predicting from an exported file: its metadata says how to feed it, the user never re-states it.

The results are `tlzoo.engine.inference.Prediction`s, so `tlzoo predict
FILE.onnx` prints exactly what `tlzoo predict RUN_DIR` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tlzoo.data.images import load_rgb
from tlzoo.engine.inference import NO_TRUST_NOTED, Prediction, check_keep, note
from tlzoo.errors import TlzooError
from tlzoo.export import metadata, onnx_file, pt2_file
from tlzoo.export.preprocess import HostInput
from tlzoo.runtime.device import configure_threads
from tlzoo.trust.threshold import threshold_for

SUFFIXES = (".onnx", ".pt2")
BATCH = 32


def is_exported_file(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES and not path.is_dir()


@dataclass
class ExportedModel:
    path: Path
    metadata: dict
    classes: list[str]
    host: HostInput
    background: tuple[int, int, int]
    run: Callable[[np.ndarray], list]  # [logits] or [logits, OOD scores]

    @property
    def trust(self) -> dict | None:
        """The run's trust record (temperature, unknown threshold), or None for a file exported without one."""
        return self.metadata.get("trust")


def load_exported(path: Path | str) -> ExportedModel:
    """Read and verify the metadata, then open the model (onnxruntime on CPU, or the torch.export program)."""
    path = Path(path)
    if not path.is_file():
        raise TlzooError(f"{path} does not exist", "pass a file written by `tlzoo export`")
    threads = configure_threads()
    if path.suffix.lower() == ".onnx":
        meta = onnx_file.read_metadata(path)
        run = onnx_file.runner(path, threads)
    elif path.suffix.lower() == ".pt2":
        meta = pt2_file.read_metadata(path)
        run = pt2_file.runner(path, meta)
    else:
        raise TlzooError(f"{path}: tlzoo predicts from .onnx and .pt2 files and run directories")
    host = HostInput(metadata.data_config_of(meta), meta["input"]["dtype"] == "uint8", meta["input"]["layout"])
    return ExportedModel(path, meta, list(meta["classes"]), host, tuple(meta["preprocessing"]["background"]), run)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predict_exported(model: ExportedModel, paths: list[Path], top_k: int = 5, reject: bool = True,
                     keep: float | None = None) -> list[Prediction]:
    """Top-k classes of each image, batched; unreadable images come back with `error` set.

    As `tlzoo predict RUN_DIR`: probabilities at the run's temperature, and `unknown` when the graph's
    OOD score is above the threshold the metadata gives for `keep` (the run's own when None).
    """
    check_keep(keep)
    k = max(1, min(top_k, len(model.classes)))
    trust = model.trust
    temperature = float(trust["calibration"]["temperature"]) if trust else 1.0
    unknown = (trust or {}).get("unknown")
    threshold = None
    if unknown is not None and reject:
        threshold = float(unknown["threshold"]) if keep is None or keep == unknown["keep"] else \
            threshold_for(keep, unknown["val_scores"])
    if trust is None and str(model.path) not in NO_TRUST_NOTED:  # once a process, as for run directories
        NO_TRUST_NOTED.add(str(model.path))
        note(f"{model.path} carries no calibration or unknown threshold (exported before tlzoo fitted them): "
             "probabilities are uncalibrated and no image is marked unknown")
    results: list[Prediction] = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
        if not pending:
            return
        outputs = [np.asarray(o, dtype=np.float32) for o in model.run(np.stack([row for _, row in pending]))]
        logits = outputs[0]
        if logits.ndim != 2 or logits.shape[1] != len(model.classes) or len(outputs) != (2 if unknown else 1):
            raise TlzooError(f"{model.path} gives outputs of shapes {[o.shape for o in outputs]} for "
                             f"{len(model.classes)} classes" + (" and an OOD score" if unknown else ""),
                             "the file does not match its metadata; export the run again")
        probs = softmax(logits.astype(np.float64) / temperature)
        scores = outputs[1].reshape(-1) if unknown else [None] * len(pending)
        for (slot, _), row, score in zip(pending, probs, scores):
            order = np.argsort(-row, kind="stable")[:k]
            results[slot].top = [(model.classes[i], float(row[i])) for i in order]
            if score is not None:
                results[slot].ood_score = float(score)
                results[slot].unknown = threshold is not None and float(score) > threshold
        pending.clear()

    for path in paths:
        results.append(Prediction(path, []))
        try:
            image = load_rgb(path, model.background, model.host.pipeline.decode_need())  # as predict decodes it
        except (TlzooError, OSError, ValueError) as exc:
            results[-1].error = str(exc)
            continue
        pending.append((len(results) - 1, model.host(image)))
        if len(pending) == BATCH:
            flush()
    flush()
    return results
