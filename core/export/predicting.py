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
from tlzoo.engine.inference import Prediction
from tlzoo.errors import TlzooError
from tlzoo.export import metadata, onnx_file, pt2_file
from tlzoo.export.preprocess import HostInput
from tlzoo.runtime.device import configure_threads

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
    run: Callable[[np.ndarray], np.ndarray]


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


def predict_exported(model: ExportedModel, paths: list[Path], top_k: int = 5) -> list[Prediction]:
    """Top-k classes of each image, batched; unreadable images come back with `error` set."""
    k = max(1, min(top_k, len(model.classes)))
    results: list[Prediction] = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
        if not pending:
            return
        logits = np.asarray(model.run(np.stack([row for _, row in pending])), dtype=np.float32)
        if logits.ndim != 2 or logits.shape[1] != len(model.classes):
            raise TlzooError(f"{model.path} gives logits of shape {logits.shape} for {len(model.classes)} classes",
                             "the file does not match its metadata; export the run again")
        probs = softmax(logits.astype(np.float64))
        for (slot, _), row in zip(pending, probs):
            order = np.argsort(-row, kind="stable")[:k]
            results[slot].top = [(model.classes[i], float(row[i])) for i in order]
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
