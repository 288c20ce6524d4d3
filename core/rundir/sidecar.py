"""The JSON sidecar of a run's model (best.json, last.json), checked before anything is built from it.

`evaluate` and `predict` rebuild the model from the sidecar, so an edited or
damaged one must not mislabel silently or allocate whatever it asks for: it is
validated with bounded fields, and compared with the copy that `save_checkpoint`
embedded in the weights file's header. The header is the authority: a sidecar
that is missing is replaced by it, one that disagrees is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tlzoo.errors import TlzooError
from tlzoo.rundir.checkpoint import embedded_meta, without_timings
from tlzoo.trust.record import validate_record

MODEL_FORMAT = "tlzoo-model/1"
MAX_SIDE = 4096  # input pixels a side; pretrained configs stay far below
MAX_EVAL_BATCH = 4096
MAX_HIDDEN = 65_536
# what the model and its inputs are built from, and what decides its probabilities and unknown answers
CHECKED = ("classes", "backbone", "head", "data_config", "eval", "trust")


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class BackboneRecord(_Part):
    name: str = Field(min_length=1, max_length=500)
    options: dict[str, Any] = {}


class HeadRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    hidden: int | None = Field(None, gt=0, le=MAX_HIDDEN)


class DataConfigRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos", "random"]
    crop_pct: float = Field(gt=0.0, le=2.0)

    @field_validator("input_size")
    @classmethod
    def _bounded(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        channels, height, width = value
        if channels != 3 or not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
            raise ValueError(f"must be [3, height, width] with sides from 1 to {MAX_SIDE}")
        return value

    @field_validator("std")
    @classmethod
    def _positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(v > 0 for v in value):
            raise ValueError("every std must be positive")
        return value


class EvalRecord(_Part):
    batch_size: int = Field(gt=0, le=MAX_EVAL_BATCH)
    precision: Literal["fp32", "bf16", "fp16"]
    precision_asked: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    background: tuple[int, int, int] = (255, 255, 255)

    @field_validator("background")
    @classmethod
    def _rgb(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if not all(0 <= v <= 255 for v in value):
            raise ValueError("each channel must be 0..255")
        return value


class ModelSidecar(_Part):
    format: Literal["tlzoo-model/1"]
    classes: list[str] = Field(min_length=1, max_length=1_000_000)
    backbone: BackboneRecord
    head: HeadRecord
    data_config: DataConfigRecord
    eval: EvalRecord
    spec_dir: str
    trust: dict | None = None  # tlzoo.trust.record: checked by validate_record

    @field_validator("trust")
    @classmethod
    def _trust(cls, value: dict | None) -> dict | None:
        return value if value is None else validate_record(value)

    @field_validator("classes")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("class names must be unique")
        return value


def _validated(meta, source: Path) -> dict:
    if not isinstance(meta, dict):
        raise TlzooError(f"{source} is not a JSON object", _HINT)
    if meta.get("format") != MODEL_FORMAT:
        raise TlzooError(f"{source} has format {str(meta.get('format'))[:80]!r}, not {MODEL_FORMAT!r}",
                         "it was written by another tool or another tlzoo version")
    try:
        ModelSidecar.model_validate(meta)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in item['loc']) or '(top)'}: {item['msg']}"
                             for item in exc.errors()[:10])
        raise TlzooError(f"{source} is damaged: {problems}", _HINT) from None
    return meta


_HINT = "the run directory was edited or damaged; restore it from the run, or delete the .json sidecar " \
        "(tlzoo then reads the copy inside the .safetensors file)"


def read_model_sidecar(run_dir: Path, which: str) -> dict:
    """The sidecar of RUN_DIR/<which>, validated and consistent with its weights file's header."""
    sidecar_file, weights_file = run_dir / f"{which}.json", run_dir / f"{which}.safetensors"
    if not weights_file.is_file():
        raise TlzooError(f"{weights_file} is missing", f"is {run_dir} a tlzoo run directory that finished an epoch?")
    embedded = embedded_meta(weights_file)
    if embedded is not None:
        embedded = _validated(embedded, weights_file)
    try:
        meta = json.loads(sidecar_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if embedded is None:
            raise TlzooError(f"{sidecar_file} is missing and {weights_file} holds no metadata",
                             f"is {run_dir} a tlzoo run directory?") from None
        return embedded
    except (OSError, ValueError) as exc:
        raise TlzooError(f"cannot read {sidecar_file}: {exc}", _HINT) from None
    meta = _validated(meta, sidecar_file)
    if embedded is not None:
        differ = [key for key in CHECKED if without_timings(meta.get(key)) != embedded.get(key)]
        if differ:
            raise TlzooError(f"{sidecar_file} disagrees with the metadata inside {weights_file} on "
                             f"{', '.join(differ)}", _HINT)
    return meta
