"""Every key of an exported file's metadata with its type and bounds, one line each.

A file whose checksums were re-sealed by hand can still say anything, so each
value is checked before tlzoo feeds the model (a crop of 0, a NaN std, a size
as text, an input that is not the crop all ended in tracebacks or NaN
predictions). Adding a key is one line in `ExportMetadata`: its type, its
bounds, and a default when files exported before it must still load (a key
without a default is required). Unknown keys are refused: every value a file
carries is checked by this model.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from tlzoo.model.backbone import DataConfig
from tlzoo.rundir.sidecar import MAX_SIDE
from tlzoo.trust.record import validate_record

FORMAT = "tlzoo-export/1"
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")
MIN_CROP_PCT = 0.05  # resizing to 20x the crop is the most any recipe could mean

Text = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]
Resized = Annotated[int, Field(ge=1, le=math.ceil(MAX_SIDE / MIN_CROP_PCT))]
Channel = Annotated[int, Field(ge=0, le=255)]
Mean = Annotated[float, Field(ge=0.0, le=1.0)]  # of images scaled to [0, 1]
Std = Annotated[float, Field(ge=0.001, le=1.0)]


class _Strict(BaseModel):
    # strict: "224" is not 224 and true is not 1; NaN and infinity are no number here
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class InputSpec(_Strict):
    dtype: Literal["uint8", "float32"]
    layout: Literal["nchw", "nhwc"]
    shape: Annotated[list[Side | None], Field(min_length=4, max_length=4)]


class Preprocessing(_Strict):
    resize_shorter_side: Resized | None
    resize: Annotated[list[Resized], Field(min_length=2, max_length=2)] | None
    center_crop: Annotated[list[Side], Field(min_length=2, max_length=2)]
    crop_pct: Annotated[float, Field(ge=MIN_CROP_PCT, le=2.0)]  # at most 2, as a run's sidecar
    interpolation: Literal[INTERPOLATIONS]
    scale: float
    mean: Annotated[list[Mean], Field(min_length=3, max_length=3)]
    std: Annotated[list[Std], Field(min_length=3, max_length=3)]
    background: Annotated[list[Channel], Field(min_length=3, max_length=3)]
    normalized_inside: bool

    @model_validator(mode="after")
    def _resize_follows_crop(self):
        if not math.isclose(self.scale, 1 / 255, rel_tol=1e-9):
            raise ValueError(f"scale is {self.scale}, not 1/255 (what tlzoo's eval transform does)")
        height, width = self.center_crop
        expected = resize_of(height, width, self.crop_pct)
        if (self.resize_shorter_side, self.resize) != expected:
            raise ValueError(f"resize_shorter_side {self.resize_shorter_side} and resize {self.resize} disagree "
                             f"with center_crop {self.center_crop} at crop_pct {self.crop_pct}")
        return self


class BackboneInfo(BaseModel):
    """Provenance (the run's backbone record, its options and weights as the sidecar holds them); feeds nothing."""

    model_config = ConfigDict(strict=True, extra="allow")
    name: Text


class Source(_Strict):
    run_dir: Text
    model: Literal["best", "last"]


class ExportMetadata(_Strict):
    format: Literal[FORMAT]
    classes: Annotated[list[Text], Field(min_length=1, max_length=100_000)]
    input: InputSpec
    preprocessing: Preprocessing
    backbone: BackboneInfo
    source: Source | None = None
    spec_hash: Text | None
    tlzoo_version: Text
    torch_version: Text | None = None
    exporter: Literal["dynamo", "torchscript", "torch.export"]
    opset: Annotated[int, Field(ge=7, le=40)] | None = None
    quantized: Literal["dynamic-int8"] | None = None
    trust: dict | None = None  # temperature, unknown threshold and its validation scores (tlzoo.trust.record)
    checksums: dict[str, Text]

    @field_validator("trust")
    @classmethod
    def _trust_record(cls, value: dict | None) -> dict | None:
        # bounded, and the threshold the one its own validation scores give for its kept share
        return value if value is None else validate_record(value)

    @model_validator(mode="after")
    def _input_is_the_crop(self):
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes: a class name appears twice")
        inside = self.input.dtype == "uint8"
        if self.preprocessing.normalized_inside != inside:
            raise ValueError(f"preprocessing.normalized_inside is {self.preprocessing.normalized_inside} for "
                             f"{self.input.dtype} input (uint8 input is normalized inside the graph, float not)")
        if not inside and self.input.layout != "nchw":
            raise ValueError("input.layout: float32 input is NCHW (the model's own layout)")
        if self.input.shape != input_shape(*self.preprocessing.center_crop, self.input.layout):
            raise ValueError(f"input.shape {self.input.shape} is not a {self.input.layout} batch of the "
                             f"center_crop {self.preprocessing.center_crop}")
        return self


def resize_of(height: int, width: int, crop_pct: float) -> tuple[int | None, list[int] | None]:
    """(resize_shorter_side, resize): a square crop resizes the shorter side, another one both sides."""
    if height == width:
        return math.floor(height / crop_pct), None
    return None, [math.floor(height / crop_pct), math.floor(width / crop_pct)]


def input_shape(height: int, width: int, layout: str) -> list[int | None]:
    return [None, height, width, 3] if layout == "nhwc" else [None, 3, height, width]


def required_keys() -> list[str]:
    return [name for name, field in ExportMetadata.model_fields.items() if field.is_required()]


def problems(meta: dict) -> list[str]:
    """Each bad value as 'key.path: what is wrong (got VALUE)'; empty when all are good."""
    try:
        ExportMetadata.model_validate(meta)
    except ValidationError as exc:
        found = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            got = "" if error["type"] == "value_error" else f" (got {str(error.get('input'))[:60]!r})"
            found.append(f"{where + ': ' if where else ''}{message}{got}")
        return found
    return []


def data_config_of(meta: dict) -> DataConfig:
    """The DataConfig whose eval transform this (checked) metadata describes."""
    prep = meta["preprocessing"]
    height, width = prep["center_crop"]
    return DataConfig(input_size=(3, height, width), mean=tuple(prep["mean"]), std=tuple(prep["std"]),
                      interpolation=prep["interpolation"], crop_pct=prep["crop_pct"])
