"""Proof that an exported file agrees with the eager model, made when the file is written.

Both sides see the same images: the eager fp32 model the run's own eval
transform output (exactly what `tlzoo predict RUN_DIR` computes in fp32), the
exported file what its metadata says it takes (normalized floats, or uint8
crops when the preprocessing is inside). Reported: max absolute logit
difference and top-1 agreement over the sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tlzoo.data.images import load_rgb
from tlzoo.data.transforms import build_eval_transform
from tlzoo.errors import TlzooError
from tlzoo.export.preprocess import HostInput
from tlzoo.model.backbone import DataConfig

DEFAULT_MIN_AGREEMENT = 0.995
QUANTIZED_MIN_AGREEMENT = 0.99
DEFAULT_SAMPLE = 512  # images at most; evenly spaced over the validation split when it has more
BATCH = 32


@dataclass
class ParityReport:
    images: int
    sample: str
    max_abs_logit_diff: float
    top1_agreement: float
    min_agreement: float

    @property
    def passed(self) -> bool:
        return self.top1_agreement >= self.min_agreement

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def line(self) -> str:
        verdict = "ok" if self.passed else f"BELOW the required {self.min_agreement:.4f}"
        return (f"parity on {self.images} images ({self.sample}): top-1 agreement {self.top1_agreement:.4f} "
                f"{verdict}, max |logit diff| {self.max_abs_logit_diff:.2e}")


def spread(items: list, limit: int) -> list:
    """At most `limit` items evenly spaced, first one included, order kept."""
    if limit <= 0 or len(items) <= limit:
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


@dataclass
class ParityInputs:
    """Per image: the eval transform's float tensor and the row the exported file takes."""

    reference: list[torch.Tensor]
    exported: list[np.ndarray]
    sample: str


def prepare(paths: list[Path], config: DataConfig, background, with_preprocessing: bool, layout: str,
            sample: str) -> ParityInputs:
    transform = build_eval_transform(config)
    host = HostInput(config, with_preprocessing, layout)
    reference, exported = [], []
    for path in paths:
        try:
            image = load_rgb(path, background, transform.decode_need())  # as predict decodes it
        except (TlzooError, OSError, ValueError):
            continue  # a bad file is the scan's business; parity needs readable images only
        reference.append(transform(image))
        exported.append(host(image))
    if not reference:
        raise TlzooError("no readable image for the parity check", "pass --parity-data FOLDER with images")
    return ParityInputs(reference, exported, sample)


def eager_logits(model: torch.nn.Module, inputs: ParityInputs) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(inputs.reference), BATCH):
            batch = torch.stack(inputs.reference[start:start + BATCH]).contiguous()
            out.append(model(batch).float().numpy())
    return np.concatenate(out)


def exported_logits(run: Callable[[np.ndarray], np.ndarray], inputs: ParityInputs) -> np.ndarray:
    return np.concatenate([np.asarray(run(np.stack(inputs.exported[start:start + BATCH])), dtype=np.float32)
                           for start in range(0, len(inputs.exported), BATCH)])


def compare(reference: np.ndarray, exported: np.ndarray, sample: str, min_agreement: float) -> ParityReport:
    if reference.shape != exported.shape:
        raise TlzooError(f"the exported model gives logits of shape {exported.shape}, the eager model "
                         f"{reference.shape}", "this is a bug in the export; please report it")
    agreement = float((reference.argmax(1) == exported.argmax(1)).mean())
    diff = float(np.abs(reference - exported).max())
    return ParityReport(len(reference), sample, diff, agreement, min_agreement)
