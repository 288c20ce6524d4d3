"""Proof that an exported file agrees with the eager model, made when the file is written.

Both sides see the same images: the eager fp32 model the run's own eval
transform output (exactly what `tlzoo predict RUN_DIR` computes in fp32), the
exported file what its metadata says it takes (normalized floats, or uint8
crops when the preprocessing is inside). Reported: max absolute logit
difference and top-1 agreement over the sample; for a file that scores
unknown images too, the max absolute score difference and the agreement of
the unknown decisions at the run's threshold.
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
from tlzoo.trust.threshold import cutoff

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
    unknown_agreement: float | None = None  # same unknown decision at the threshold; None: the file scores none
    max_abs_score_diff: float | None = None
    threshold: float | None = None

    @property
    def passed(self) -> bool:
        return self.top1_agreement >= self.min_agreement and (
            self.unknown_agreement is None or self.unknown_agreement >= self.min_agreement)

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def line(self) -> str:
        verdict = "ok" if self.passed else f"BELOW the required {self.min_agreement:.4f}"
        unknown = "" if self.unknown_agreement is None else (
            f", unknown decisions agree on {self.unknown_agreement:.4f} (max |score diff| "
            f"{self.max_abs_score_diff:.2e})")
        return (f"parity on {self.images} images ({self.sample}): top-1 agreement {self.top1_agreement:.4f}"
                f"{unknown} {verdict}, max |logit diff| {self.max_abs_logit_diff:.2e}")


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


def _outputs(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def eager_outputs(model: torch.nn.Module, inputs: ParityInputs) -> list[np.ndarray]:
    """[logits] or [logits, scores] of the eager module (a TransferModel, or one wrapped with its score)."""
    model.eval()
    out: list[list[np.ndarray]] = []
    with torch.inference_mode():
        for start in range(0, len(inputs.reference), BATCH):
            batch = torch.stack(inputs.reference[start:start + BATCH]).contiguous()
            out.append([t.float().numpy() for t in _outputs(model(batch))])
    return [np.concatenate(parts) for parts in zip(*out)]


def exported_outputs(run: Callable[[np.ndarray], list], inputs: ParityInputs) -> list[np.ndarray]:
    out = [[np.asarray(t, dtype=np.float32) for t in _outputs(run(np.stack(inputs.exported[start:start + BATCH])))]
           for start in range(0, len(inputs.exported), BATCH)]
    return [np.concatenate(parts) for parts in zip(*out)]


def compare(reference: list[np.ndarray], exported: list[np.ndarray], sample: str, min_agreement: float,
            threshold: float | None = None) -> ParityReport:
    """Logits (and, with a threshold, the unknown decisions) of the file against the eager model's."""
    if len(reference) != len(exported) or reference[0].shape != exported[0].shape:
        raise TlzooError(f"the exported model gives outputs of shapes {[o.shape for o in exported]}, the eager "
                         f"model {[o.shape for o in reference]}", "this is a bug in the export; please report it")
    agreement = float((reference[0].argmax(1) == exported[0].argmax(1)).mean())
    diff = float(np.abs(reference[0] - exported[0]).max())
    report = ParityReport(len(reference[0]), sample, diff, agreement, min_agreement)
    if threshold is not None and len(reference) == 2:
        report.threshold = threshold
        cut = cutoff(threshold)  # the rule of tlzoo.trust.threshold.is_unknown
        report.unknown_agreement = float(((reference[1] > cut) == (exported[1] > cut)).mean())
        report.max_abs_score_diff = float(np.abs(reference[1] - exported[1]).max())
    return report
