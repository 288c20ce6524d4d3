"""Predicting from an exported file: its metadata says how to feed it, the user never re-states it.

The results are `tlzoo.engine.inference.Prediction`s, so `tlzoo predict
FILE.onnx` prints exactly what `tlzoo predict RUN_DIR` prints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tlzoo.engine.inference import NO_TRUST_NOTED, Prediction, check_keep, note, predict_with
from tlzoo.errors import TlzooError
from tlzoo.export import metadata, onnx_file, pt2_file
from tlzoo.export.preprocess import HostInput
from tlzoo.runtime.device import configure_threads
from tlzoo.trust.threshold import above, threshold_for

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
    run: Callable[[np.ndarray], list]  # [logits] or [logits, OOD scores]
    batch_size: int = BATCH
    reject: bool = True  # mark images above the threshold unknown
    keep: float | None = None  # the kept share whose threshold applies; None: the run's own

    @property
    def trust(self) -> dict | None:
        """The run's trust record (temperature, unknown threshold), or None for a file exported without one."""
        return self.metadata.get("trust")

    @property
    def need(self):
        """How small an image may be decoded for this file's preprocessing (as `tlzoo predict RUN_DIR`)."""
        return self.host.pipeline.decode_need()

    def prepare(self, image) -> np.ndarray:
        return self.host(image)

    def threshold(self) -> float | None:
        """The unknown threshold for `keep` from the metadata, or None (no threshold, or `reject` off)."""
        unknown = (self.trust or {}).get("unknown")
        if unknown is None or not self.reject:
            return None
        if self.keep is None or self.keep == unknown["keep"]:
            return float(unknown["threshold"])
        return threshold_for(self.keep, unknown["val_scores"])

    def score(self, rows: list[np.ndarray], top_ks: list[int]) -> list[Prediction]:
        """One Prediction (path None) per row, each with its own number of top classes: as `tlzoo predict
        RUN_DIR`, probabilities at the run's temperature and `unknown` when the graph's OOD score is above
        the threshold."""
        trust = self.trust
        scored = (trust or {}).get("unknown") is not None
        outputs = [np.asarray(o, dtype=np.float32) for o in self.run(np.stack(rows))]
        logits = outputs[0]
        if logits.ndim != 2 or logits.shape[1] != len(self.classes) or len(outputs) != (2 if scored else 1):
            raise TlzooError(f"{self.path} gives outputs of shapes {[o.shape for o in outputs]} for "
                             f"{len(self.classes)} classes" + (" and an OOD score" if scored else ""),
                             "the file does not match its metadata; export the run again")
        temperature = float(trust["calibration"]["temperature"]) if trust else 1.0
        scores = outputs[1].reshape(-1).tolist() if scored else [None] * len(rows)
        threshold = self.threshold()
        out = []
        for row, top_k, score in zip(softmax(logits.astype(np.float64) / temperature), top_ks, scores):
            order = np.argsort(-row, kind="stable")[:max(1, min(top_k, len(self.classes)))]
            out.append(Prediction(None, [(self.classes[i], float(row[i])) for i in order],
                                  unknown=threshold is not None and above(score, threshold), ood_score=score))
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


def predict_exported(model: ExportedModel, paths: list[Path], top_k: int = 5, reject: bool = True,
                     keep: float | None = None) -> list[Prediction]:
    """Top-k classes of each image, batched; unreadable images come back with `error` set; calibrated and
    marked unknown as ExportedModel.score says, at the threshold for `keep` unless `reject` is False."""
    check_keep(keep)
    if model.trust is None and str(model.path) not in NO_TRUST_NOTED:  # once a process, as for run directories
        NO_TRUST_NOTED.add(str(model.path))
        note(f"{model.path} carries no calibration or unknown threshold (exported before tlzoo fitted them): "
             "probabilities are uncalibrated and no image is marked unknown")
    return predict_with(dataclasses.replace(model, reject=reject, keep=keep), paths, top_k)
