"""What an exported file says about itself: classes, preprocessing, provenance, and checksums.

Every key a consumer needs to feed the model is here, so nobody re-states the
preprocessing (the usual cause of an export that disagrees with PyTorch). Each
key carries a checksum, and so does the model itself: a file whose metadata
was edited, or a sidecar paired with another model, is refused naming the key,
never run. The checksums guard against accidents and mix-ups, not forgery.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from tlzoo.errors import TlzooError
from tlzoo.model.backbone import DataConfig
from tlzoo.trust.record import validate_record

FORMAT = "tlzoo-export/1"
REQUIRED = ("format", "classes", "input", "preprocessing", "backbone", "spec_hash", "tlzoo_version", "exporter",
            "checksums")
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def checksum(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def preprocessing_of(config: DataConfig, background, inside: bool) -> dict:
    """The eval recipe in plain words: resize the shorter side, centre crop, scale to [0, 1], normalize."""
    height, width = config.input_size[1:]
    crop_pct = config.crop_pct or 1.0
    return {
        "resize_shorter_side": math.floor(height / crop_pct) if height == width else None,
        "resize": None if height == width else [math.floor(height / crop_pct), math.floor(width / crop_pct)],
        "center_crop": [height, width],
        "crop_pct": config.crop_pct,
        "interpolation": config.interpolation,
        "scale": 1 / 255,
        "mean": list(config.mean),
        "std": list(config.std),
        "background": list(background),  # what transparent pixels are composited on
        "normalized_inside": inside,  # True: the graph takes uint8 and does scale/mean/std itself
    }


def input_of(config: DataConfig, with_preprocessing: bool, layout: str) -> dict:
    height, width = config.input_size[1:]
    shape = [None, height, width, 3] if layout == "nhwc" else [None, 3, height, width]
    return {"dtype": "uint8" if with_preprocessing else "float32", "layout": layout, "shape": shape}


def seal(meta: dict, model_bytes_checksum: str) -> dict:
    """`meta` with a checksum for each key and one for the model."""
    body = {k: v for k, v in meta.items() if k != "checksums"}
    sums = {key: checksum(_canonical(value)) for key, value in body.items()}
    sums["model"] = model_bytes_checksum
    return {**body, "checksums": sums}


def verify(meta, where: Path, model_bytes_checksum: str | None) -> dict:
    """Refuse metadata that is missing, incomplete, edited or paired with another model; returns it."""
    hint = "export the run again with `tlzoo export RUN_DIR`; tlzoo never guesses preprocessing"
    if not isinstance(meta, dict):
        raise TlzooError(f"{where} carries no tlzoo metadata", hint)
    missing = [key for key in REQUIRED if key not in meta]
    if missing:
        raise TlzooError(f"{where}: metadata key(s) missing: {', '.join(missing)}", hint)
    if meta["format"] != FORMAT:
        raise TlzooError(f"{where}: metadata key 'format' is {meta['format']!r}, not {FORMAT!r}",
                         "it was written by another tool or another tlzoo version; " + hint)
    sums = meta["checksums"]
    if not isinstance(sums, dict):
        raise TlzooError(f"{where}: metadata key 'checksums' is not an object", hint)
    for key, value in meta.items():
        if key == "checksums":
            continue
        if key not in sums:
            raise TlzooError(f"{where}: metadata key {key!r} has no checksum (added after export)", hint)
        if sums[key] != checksum(_canonical(value)):
            raise TlzooError(f"{where}: metadata key {key!r} was changed after export (its checksum does not "
                             "match)", hint)
    gone = [key for key in sums if key != "model" and key not in meta]
    if gone:
        raise TlzooError(f"{where}: metadata key(s) removed after export: {', '.join(gone)}", hint)
    if model_bytes_checksum is not None and sums.get("model") != model_bytes_checksum:
        raise TlzooError(f"{where}: the model does not match its metadata (checksum 'model' differs): the file "
                         "was changed after export or the metadata belongs to another export", hint)
    _check_values(meta, where)
    return meta


def _check_values(meta: dict, where: Path) -> None:
    """Values a hand-written (re-sealed) file could still get wrong."""
    def bad(key: str, why: str):
        raise TlzooError(f"{where}: metadata key {key!r} {why}", "export the run again with `tlzoo export`")

    classes = meta["classes"]
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        bad("classes", "must be a non-empty list of class names")
    prep = meta["preprocessing"]
    for key in ("mean", "std", "center_crop", "interpolation", "crop_pct", "background", "normalized_inside"):
        if not isinstance(prep, dict) or key not in prep:
            bad(f"preprocessing.{key}", "is missing")
    for key in ("mean", "std"):
        values = prep[key]
        if not (isinstance(values, list) and len(values) == 3 and all(isinstance(v, (int, float)) for v in values)):
            bad(f"preprocessing.{key}", "must be three numbers")
    if any(v <= 0 for v in prep["std"]):
        bad("preprocessing.std", "must be positive")
    if prep["interpolation"] not in INTERPOLATIONS:
        bad("preprocessing.interpolation", f"must be one of {', '.join(INTERPOLATIONS)}")
    if "trust" in meta:  # the temperature, threshold and validation scores: bounded, and consistent with each other
        try:
            validate_record(meta["trust"])
        except ValueError as exc:
            bad("trust", f"is not a valid trust record: {exc}")
    shape = meta["input"].get("shape") if isinstance(meta["input"], dict) else None
    if meta["input"].get("layout") not in ("nchw", "nhwc") or meta["input"].get("dtype") not in ("uint8", "float32") \
            or not isinstance(shape, list) or len(shape) != 4:
        bad("input", "must give dtype uint8|float32, layout nchw|nhwc and a 4-dimensional shape")


def data_config_of(meta: dict) -> DataConfig:
    """The DataConfig whose eval transform this file was exported with."""
    prep = meta["preprocessing"]
    height, width = prep["center_crop"]
    return DataConfig(input_size=(3, int(height), int(width)), mean=tuple(prep["mean"]), std=tuple(prep["std"]),
                      interpolation=prep["interpolation"], crop_pct=float(prep["crop_pct"]))
