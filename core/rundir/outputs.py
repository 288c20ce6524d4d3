"""The run directory: spec.json, metrics.jsonl, best/last weights with JSON sidecars, summary.json.

Weights are safetensors and everything else is JSON: nothing in a run
directory is a pickle. Files are written to a temporary name, flushed to disk
and renamed, so a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path

import torch

from tlzoo.errors import TlzooError

SPEC_FILE = "spec.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
SKIPPED_FILE = "skipped.txt"
TMP_SUFFIX = ".tmp"


def new_run_dir(output_root: Path, name: str) -> Path:
    """`output_root/name`, or name-2, name-3, ... when taken."""
    output_root.mkdir(parents=True, exist_ok=True)
    candidate, number = output_root / name, 1
    while candidate.exists():
        number += 1
        candidate = output_root / f"{name}-{number}"
    candidate.mkdir()
    return candidate


def claim_run_dir(path: Path) -> Path:
    """An explicit --output: created if missing, refused if it already holds files."""
    if path.exists() and not path.is_dir():
        raise TlzooError(f"--output {path} is a file, not a folder", "pass a folder for the run directory")
    if path.is_dir() and any(path.iterdir()):
        raise TlzooError(f"--output {path} already holds files",
                         "pass a new or empty folder, or leave --output out to get a fresh run directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _json_safe(value):
    """NaN and infinities become null: JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def dumps(value) -> str:
    return json.dumps(_json_safe(value), indent=2, allow_nan=False)


def write_atomic(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename, fsync the folder (tlzoo.rundir.checkpoint.atomic_write)."""
    from tlzoo.rundir.checkpoint import atomic_write

    atomic_write(path, data)


def write_json(path: Path, value) -> None:
    write_atomic(path, (dumps(value) + "\n").encode())


def append_jsonl(path: Path, value: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(_json_safe(value), allow_nan=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TlzooError(f"{path} is missing", f"is {path.parent} a tlzoo run directory? ({what})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise TlzooError(f"cannot read {path}: {exc}", f"the run directory's {what} is damaged") from None


def save_weights(path: Path, model: torch.nn.Module, sidecar: dict) -> None:
    """`path` (.safetensors) holds the model's state dict; `path` with .json the sidecar."""
    from safetensors.torch import save

    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    write_atomic(path, save(state, metadata={"format": "pt", "producer": "tlzoo"}))
    write_json(path.with_suffix(".json"), sidecar)


def spec_hash(spec_json: dict) -> str:
    text = json.dumps(spec_json, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in ("tlzoo", "torch", "torchvision", "timm", "safetensors", "pillow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def resolved_spec_json(resolved) -> dict:
    """The spec as it ran: defaults filled in, each component's options validated."""
    data = resolved.spec.model_dump(mode="json")
    data["backbone"]["options"] = resolved.backbone.options.model_dump(mode="json")
    data["data"]["reader"]["options"] = resolved.reader.options.model_dump(mode="json")
    data["train"]["strategy"]["options"] = resolved.strategy.options.model_dump(mode="json")
    return data
