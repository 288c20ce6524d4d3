"""Predicting from an exported file: its metadata says how to feed it, the user never re-states it.

The results are `tlzoo.engine.inference.Prediction`s, so `tlzoo predict
FILE.onnx` prints exactly what `tlzoo predict RUN_DIR` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tlzoo.engine.inference import Prediction, predict_with
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
    """An exported file's predict path; the interface of tlzoo.engine.inference.RunPredictor (`predict_with`)."""

    path: Path
    metadata: dict
    classes: list[str]
    host: HostInput
    background: tuple[int, int, int]
    run: Callable[[np.ndarray], np.ndarray]
    batch_size: int = BATCH

    @property
    def need(self):
        """How small an image may be decoded for this file's preprocessing (as `tlzoo predict RUN_DIR`)."""
        return self.host.pipeline.decode_need()

    def prepare(self, image) -> np.ndarray:
        return self.host(image)

    def score(self, rows: list[np.ndarray], top_ks: list[int]) -> list[Prediction]:
        """One Prediction (path None) per row, each with its own number of top classes."""
        logits = np.asarray(self.run(np.stack(rows)), dtype=np.float32)
        if logits.ndim != 2 or logits.shape[1] != len(self.classes):
            raise TlzooError(f"{self.path} gives logits of shape {logits.shape} for {len(self.classes)} classes",
                             "the file does not match its metadata; export the run again")
        out = []
        for row, top_k in zip(softmax(logits.astype(np.float64)), top_ks):
            order = np.argsort(-row, kind="stable")[:max(1, min(top_k, len(self.classes)))]
            out.append(Prediction(None, [(self.classes[i], float(row[i])) for i in order]))
        return out


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
    return predict_with(model, paths, top_k)
