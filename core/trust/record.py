"""What a run keeps to calibrate and to call images unknown, validated wherever it is read.

The record is JSON (in the model's sidecar and header, and in an exported
file's metadata); the tensors a score needs travel beside it (in the weights
file under `trust.`, or inside an exported graph). Every field is bounded and
the threshold must be the one its own validation table gives for its kept
share, so an edited threshold is refused even where no checksum covers it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tlzoo.trust import calibration
from tlzoo.trust.options import METHOD_OPTIONS
from tlzoo.trust.scores import TENSORS, build_scorer, score_rows
from tlzoo.trust.threshold import TABLE_LIMIT, is_unknown, threshold_for

FORMAT = "tlzoo-trust/1"
TENSOR_PREFIX = "trust."  # names of the score's tensors inside a weights file
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 1e3
MAX_TENSOR_SIDE = 1_000_000


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["temperature", "none"]
    temperature: float = Field(ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, allow_inf_nan=False)
    split: str = Field(max_length=40)
    images: int = Field(ge=0)

    @model_validator(mode="after")
    def _none_is_one(self):
        if self.method == "none" and self.temperature != 1.0:
            raise ValueError("method 'none' has temperature 1")
        return self


class Unknown(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["knn", "msp", "energy", "mahalanobis"]
    options: dict[str, Any] = {}
    keep: float = Field(gt=0.0, le=1.0, allow_inf_nan=False)
    threshold: float = Field(allow_inf_nan=False)
    val_kept: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    val_scores: list[float] = Field(min_length=1, max_length=TABLE_LIMIT)
    split: str = Field(max_length=40)
    tensors: dict[str, list[int]] = {}

    @field_validator("val_scores")
    @classmethod
    def _sorted_finite(cls, value: list[float]) -> list[float]:
        if not all(math.isfinite(v) for v in value) or any(a > b for a, b in zip(value, value[1:])):
            raise ValueError("must be finite and sorted ascending")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        METHOD_OPTIONS[self.method].model_validate(self.options)
        expected = threshold_for(self.keep, self.val_scores)
        if self.threshold != expected:
            raise ValueError(f"threshold {self.threshold!r} is not the one its validation scores give for keep "
                             f"{self.keep} ({expected!r})")
        if sorted(self.tensors) != sorted(TENSORS[self.method]):
            raise ValueError(f"method {self.method!r} needs tensors {list(TENSORS[self.method])}, "
                             f"the record names {sorted(self.tensors)}")
        for name, shape in self.tensors.items():
            if len(shape) != 2 or not all(1 <= side <= MAX_TENSOR_SIDE for side in shape):
                raise ValueError(f"tensor {name!r} must have two sides from 1 to {MAX_TENSOR_SIDE}")
        return self


class TrustRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["tlzoo-trust/1"]
    calibration: Calibration
    unknown: Unknown | None = None


def validate_record(record) -> dict:
    """The record as given when it is well-formed; ValueError naming the fields otherwise."""
    try:
        TrustRecord.model_validate(record)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in item['loc']) or '(top)'}: {item['msg']}"
                             for item in exc.errors()[:5])
        raise ValueError(problems) from None
    return record


def tensors_of(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The score's tensors of a weights file (names without the prefix)."""
    return {name[len(TENSOR_PREFIX):]: t for name, t in weights.items() if name.startswith(TENSOR_PREFIX)}


@dataclass
class Trust:
    """A validated record and its score module: calibrated probabilities, scores and decisions."""

    record: dict
    scorer: torch.nn.Module | None

    @classmethod
    def load(cls, record: dict, tensors: dict[str, torch.Tensor]) -> "Trust":
        """From a validated record and the tensors stored with it (their shapes must be the recorded ones)."""
        unknown = record.get("unknown")
        scorer = None
        if unknown is not None:
            for name, shape in unknown["tensors"].items():
                if name not in tensors or list(tensors[name].shape) != shape:
                    found = list(tensors[name].shape) if name in tensors else "missing"
                    raise ValueError(f"tensor {TENSOR_PREFIX}{name}: expected shape {shape}, found {found}")
            scorer = build_scorer(unknown["method"], unknown["options"], record["calibration"]["temperature"],
                                  tensors)
        return cls(record, scorer)

    @property
    def temperature(self) -> float:
        return float(self.record["calibration"]["temperature"])

    @property
    def method(self) -> str:
        unknown = self.record.get("unknown")
        return unknown["method"] if unknown else "none"

    def threshold(self, keep: float | None = None) -> float | None:
        """The stored threshold, or the one that keeps `keep` of the validation images."""
        unknown = self.record.get("unknown")
        if unknown is None:
            return None
        if keep is None or keep == unknown["keep"]:
            return float(unknown["threshold"])
        return threshold_for(keep, unknown["val_scores"])

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits.float() / self.temperature).softmax(1)

    def scores(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        if self.scorer is None:
            return None
        return score_rows(self.scorer, features, logits)

    def unknown(self, scores: torch.Tensor | None, keep: float | None = None) -> list[bool]:
        threshold = self.threshold(keep)
        if scores is None or threshold is None:
            return [False] * (0 if scores is None else len(scores))
        return is_unknown(scores, threshold).tolist()


def evaluation_figures(record: dict, logits: torch.Tensor, labels: torch.Tensor,
                       scores: torch.Tensor | None) -> dict:
    """What `tlzoo evaluate` reports of labelled (so known) images: calibration before and after the record's
    temperature, and the share of them the unknown threshold keeps."""
    from tlzoo.trust.threshold import kept_share

    temperature = float(record["calibration"]["temperature"])
    figures = {"calibration": {"method": record["calibration"]["method"], "temperature": temperature,
                               **calibration.before_after(logits, labels, temperature, "evaluated images")}}
    unknown = record.get("unknown")
    if unknown is not None and scores is not None:
        figures["unknown"] = {"method": unknown["method"], "keep": unknown["keep"], "threshold": unknown["threshold"],
                              "kept": kept_share(scores.cpu(), unknown["threshold"]), "images": len(labels),
                              "val_kept": unknown["val_kept"]}
    return figures


def calibration_only(temperature: float, method: str, split: str, images: int) -> dict:
    return {"method": method, "temperature": float(temperature), "split": split, "images": int(images)}


__all__ = ["FORMAT", "TENSOR_PREFIX", "Trust", "TrustRecord", "calibration", "calibration_only", "tensors_of",
           "validate_record"]
