"""Checkpoints that survive crashes: safetensors + JSON pairs, written atomically.

A checkpoint `STEM` is `STEM.safetensors` (tensors) and `STEM.json` (everything
else, for people and tools). Each file is written to a temporary file in the
same folder, fsynced, renamed over the old one, and the folder is fsynced, so a
crash leaves either the old file or the new one, never a torn one. The JSON is
also embedded in the safetensors header: the weights file alone is a complete,
consistent checkpoint even if a crash falls between the two renames.

No pickle anywhere: tensors go to safetensors, the rest to JSON. What a
training checkpoint holds is in `tlzoo.rundir.training_state`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import torch

from tlzoo.errors import TlzooError, WeightsError
from tlzoo.model.weights import load_state_file

TMP_SUFFIX = ".tmp"  # every temporary file tlzoo writes into a run directory ends so
META_KEY = "tlzoo_meta"  # safetensors header entry holding the JSON metadata
FORMAT = "tlzoo-checkpoint-1"
_counter = itertools.count()


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, whole."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_counter)}{TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave a half-written temporary behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def clean_stale_temporaries(run_dir: Path) -> list[Path]:
    """Remove temporary files a crashed save left in `run_dir`; returns what was removed."""
    removed = []
    for path in sorted(Path(run_dir).glob(f"*{TMP_SUFFIX}")):  # pathlib's * matches dot files too
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed


def weights_path(stem: Path) -> Path:
    return Path(f"{stem}.safetensors")


def meta_path(stem: Path) -> Path:
    return Path(f"{stem}.json")


def json_safe(value):
    """NaN and infinities become null (JSON has no spelling for them); tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def non_finite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    return [name for name, t in tensors.items()
            if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all())]


def save_checkpoint(stem: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write `stem.safetensors` and `stem.json` atomically; refuses NaN or infinite tensors."""
    from safetensors.torch import save

    stem = Path(stem)
    bad = non_finite_tensors(tensors)
    if bad:
        raise TlzooError(
            f"refused to write {weights_path(stem)}: tensor(s) {', '.join(bad[:5])} hold NaN or infinite values; "
            "the previous checkpoint is kept",
            "the training diverged: lower train.optimizer.lr or check the data",
        )
    text = json.dumps(json_safe({"format": FORMAT, **meta}), allow_nan=False)
    blob = save(_storable(tensors), metadata={"format": "pt", "producer": "tlzoo", META_KEY: text})
    atomic_write(weights_path(stem), blob)
    atomic_write(meta_path(stem), (json.dumps(json.loads(text), indent=2) + "\n").encode())


def _storable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two entries sharing memory (safetensors refuses that)."""
    out, seen = {}, set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset()) if tensor.numel() else None
        if key in seen:
            tensor = tensor.clone()
        seen.add(key)
        out[name] = tensor
    return out


def load_checkpoint(stem: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a pair written by `save_checkpoint` (tensors through `load_state_file`)."""
    stem = Path(stem)
    path = weights_path(stem)
    tensors = load_state_file(path)
    meta = embedded_meta(path)
    if meta is None:  # a pair written by other code: its sidecar is all there is
        try:
            meta = json.loads(meta_path(stem).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise WeightsError(f"checkpoint {path} has no metadata and {meta_path(stem)} is missing") from None
        except (OSError, ValueError) as exc:
            raise WeightsError(f"cannot read checkpoint metadata {meta_path(stem)}: {exc}") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"checkpoint metadata of {path} is not a JSON object")
    return tensors, meta


def embedded_meta(path: Path) -> dict | None:
    """The JSON kept in the safetensors header, or None when there is none."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"checkpoint {path} is not a valid safetensors file: {exc}") from None
    if META_KEY not in header:
        return None
    try:
        return json.loads(header[META_KEY])
    except ValueError as exc:
        raise WeightsError(f"checkpoint {path} holds damaged metadata: {exc}") from None
