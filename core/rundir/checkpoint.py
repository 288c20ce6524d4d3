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

import json
from pathlib import Path

import torch

from tlzoo.errors import TlzooError, WeightsError
from tlzoo.model.weights import load_state_file
from tlzoo.rundir.writing import TMP_SUFFIX, atomic_write, json_safe

META_KEY = "tlzoo_meta"  # safetensors header entry holding the JSON metadata
FORMAT = "tlzoo-checkpoint-1"
TIMING_KEYS = frozenset({"seconds"})  # wall-clock values: in the JSON sidecar only, never in the header


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
    full = json_safe({"format": FORMAT, **meta})
    # the header leaves out wall-clock timings, so identical runs give byte-identical weights files
    text = json.dumps(without_timings(full), allow_nan=False)
    blob = save(_storable(tensors), metadata={"format": "pt", "producer": "tlzoo", META_KEY: text})
    atomic_write(weights_path(stem), canonical_header(blob))
    atomic_write(meta_path(stem), (json.dumps(full, indent=2, allow_nan=False) + "\n").encode())


def canonical_header(blob: bytes) -> bytes:
    """The safetensors file with its JSON header's keys sorted (the library writes them in hash order).

    Same keys and values, so the header keeps its length and every data offset holds.
    """
    length = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    if len(text) > length:  # never expected: the library writes compact JSON too
        return blob
    return blob[:8] + text.ljust(length, b" ") + blob[8 + length:]


def without_timings(value):
    """`value` without its TIMING_KEYS entries, at any depth."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


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
    else:
        meta = _with_sidecar_timings(stem, meta)
    if not isinstance(meta, dict):
        raise WeightsError(f"checkpoint metadata of {path} is not a JSON object")
    return tensors, meta


def _with_sidecar_timings(stem: Path, embedded):
    """The sidecar when it is the header's twin plus timings; else the header (a stale or edited sidecar)."""
    try:
        sidecar = json.loads(meta_path(stem).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return embedded
    return sidecar if without_timings(sidecar) == embedded else embedded


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
