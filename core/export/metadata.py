"""What an exported file says about itself: classes, preprocessing, provenance, and checksums.

Every key a consumer needs to feed the model is here, so nobody re-states the
preprocessing (the usual cause of an export that disagrees with PyTorch). Each
key carries a checksum, and so does the model itself: a file whose metadata
was edited, or a sidecar paired with another model, is refused naming the key,
never run. The checksums guard against accidents and mix-ups, not forgery;
every value is then checked against its bounds (tlzoo.export.metadata_fields)
and the declared input and classes against the graph itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tlzoo.errors import TlzooError
from tlzoo.export.metadata_fields import FORMAT, data_config_of, input_shape, problems, required_keys, resize_of
from tlzoo.model.backbone import DataConfig

__all__ = ["FORMAT", "checksum", "check_graph", "data_config_of", "input_of", "preprocessing_of", "seal", "verify"]


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def checksum(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def preprocessing_of(config: DataConfig, background, inside: bool) -> dict:
    """The eval recipe in plain words: resize the shorter side, centre crop, scale to [0, 1], normalize."""
    height, width = config.input_size[1:]
    crop_pct = config.crop_pct or 1.0
    resize_shorter_side, resize = resize_of(height, width, crop_pct)
    return {
        "resize_shorter_side": resize_shorter_side,
        "resize": resize,
        "center_crop": [height, width],
        "crop_pct": crop_pct,
        "interpolation": config.interpolation,
        "scale": 1 / 255,
        "mean": list(config.mean),
        "std": list(config.std),
        "background": list(background),  # what transparent pixels are composited on
        "normalized_inside": inside,  # True: the graph takes uint8 and does scale/mean/std itself
    }


def input_of(config: DataConfig, with_preprocessing: bool, layout: str) -> dict:
    """What the graph takes: uint8 in `layout` with the preprocessing inside, else the model's own float NCHW."""
    layout = layout if with_preprocessing else "nchw"
    return {"dtype": "uint8" if with_preprocessing else "float32", "layout": layout,
            "shape": input_shape(*config.input_size[1:], layout)}


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
    missing = [key for key in required_keys() if key not in meta]
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
    bad = problems(meta)
    if bad:
        raise TlzooError(f"{where}: metadata value(s) out of range: {'; '.join(bad)}",
                         "export the run again with `tlzoo export`")
    return meta


def check_graph(meta: dict, where: Path, dtype: str, shape: list, logits: int | None, outputs: int | None = None
                ) -> None:
    """The graph itself must take the declared input and give one logit per class; with the run's unknown
    threshold in `trust` it gives the OOD score as a second output, and without it the logits alone."""
    declared = meta["input"]
    if dtype != declared["dtype"] or len(shape) != 4 or list(shape[1:]) != declared["shape"][1:]:
        raise TlzooError(f"{where}: the graph takes {dtype} {_shape(shape)} but metadata key 'input' declares "
                         f"{declared['dtype']} {_shape(declared['shape'])}", "export the run again")
    if logits is not None and logits != len(meta["classes"]):
        raise TlzooError(f"{where}: the graph gives {logits} logits but metadata key 'classes' names "
                         f"{len(meta['classes'])}", "export the run again")
    scored = ((meta.get("trust") or {}).get("unknown")) is not None
    if outputs is not None and outputs != (2 if scored else 1):
        raise TlzooError(f"{where}: the graph has {outputs} output(s), but metadata key 'trust' "
                         + ("names an unknown threshold (it needs logits and an ood_score)" if scored else
                            "names no unknown threshold (it expects the logits alone)"), "export the run again")


def _shape(shape) -> str:
    return "[" + ",".join("N" if d is None else str(d) for d in shape) + "]"
