"""torch.export files: an ExportedProgram saved with `torch.export.save`, metadata in JSON beside it.

`model.pt2` is torch's own archive; `model.pt2.json` beside it holds the
metadata, whose "model" checksum is the archive's bytes, so the pair cannot be
mixed up. torch's loader runs code for many kinds of entry (pickles, symbolic
shapes, guards), so tlzoo.export.pt2_archive checks every entry against an
allow-list first and a file that fails is refused unread.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from tlzoo.errors import TlzooError
from tlzoo.export import metadata, pt2_archive


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def file_checksum(path: Path) -> str:
    return metadata.checksum(path.read_bytes())


def write(module: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict) -> dict:
    """Export with a dynamic batch, save, and write the sealed metadata beside it; returns it."""
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},), strict=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise TlzooError(f"torch.export could not capture the model: {type(exc).__name__}: {first}",
                         "try --format onnx (it falls back to the TorchScript-based exporter)") from None
    torch.export.save(program, str(path))
    sealed = metadata.seal(meta, file_checksum(path))
    sidecar_of(path).write_text(json.dumps(sealed, indent=2) + "\n", encoding="utf-8")
    return sealed


def read_metadata(path: Path) -> dict:
    side = sidecar_of(path)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TlzooError(f"{path} has no metadata: {side} is missing",
                         "keep the .pt2.json that `tlzoo export` wrote beside the .pt2; tlzoo never guesses an "
                         "exported model's preprocessing or classes") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise TlzooError(f"cannot read {side}: {exc}", "export the run again") from None
    return metadata.verify(meta, side, file_checksum(path))


def load(path: Path, meta: dict) -> torch.nn.Module:
    """The exported program as a callable module, from bytes that passed tlzoo.export.pt2_archive.check,
    once its graph is shown to take the input `meta` declares."""
    data = path.read_bytes()
    pt2_archive.check(data, path)
    try:
        program = torch.export.load(io.BytesIO(data))
        module = program.module()
    except Exception as exc:
        raise TlzooError(f"cannot load {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                         "load it with the torch version that exported it (see its metadata)") from None
    metadata.check_graph(meta, path, *_graph_io(program))
    return module


def _graph_io(program) -> tuple[str, list, int | None, int | None]:
    """(input dtype, input shape with None for a symbolic size, logits per image or None, outputs); the logits
    are the first output, an OOD score the second (tlzoo.export.trusted)."""
    signature = program.graph_signature
    values = {node.name: node.meta.get("val") for node in program.graph.nodes}
    if len(signature.user_inputs) != 1 or len(signature.user_outputs) not in (1, 2):
        return "several inputs or outputs", [], None, None
    first, logits = values.get(signature.user_inputs[0]), values.get(signature.user_outputs[0])
    if not isinstance(first, torch.Tensor):
        return "no tensor", [], None, None
    shape = [d if isinstance(d, int) else None for d in first.shape]
    classes = logits.shape[1] if isinstance(logits, torch.Tensor) and logits.dim() == 2 else None
    return (str(first.dtype).removeprefix("torch."), shape, classes if isinstance(classes, int) else None,
            len(signature.user_outputs))


def runner(path: Path, meta: dict):
    """numpy batch -> [numpy logits] or [logits, OOD scores], through the loaded program."""
    module = load(path, meta)

    def run(batch):
        with torch.inference_mode():
            out = module(torch.from_numpy(batch))
        return [t.float().numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]

    return run
