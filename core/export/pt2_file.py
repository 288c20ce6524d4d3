"""torch.export files: an ExportedProgram saved with `torch.export.save`, metadata in JSON beside it.

`model.pt2` is torch's own archive; `model.pt2.json` beside it holds the
metadata, whose "model" checksum is the archive's bytes, so the pair cannot be
mixed up. torch's loader falls back to unrestricted unpickling for some
entries (tensor subclasses, sample inputs it cannot load safely), so before
loading tlzoo checks that every such entry loads with `weights_only=True` and
that no weight is stored as a pickle; a file that fails is refused unread.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch

from tlzoo.errors import TlzooError
from tlzoo.export import metadata


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


def _refuse_pickles(path: Path) -> None:
    """Entries torch.export.load would unpickle without restriction must load with weights_only=True."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise TlzooError(f"{path} is not a torch.export archive", "pass a file written by `tlzoo export "
                         "--format pt2`") from None
    with archive:
        for name in archive.namelist():
            if name.endswith("_config.json"):
                config = json.loads(archive.read(name))
                if '"use_pickle": true' in json.dumps(config):
                    raise TlzooError(f"{path}: {name} stores tensors as pickles, which tlzoo does not load",
                                     "export the run again with `tlzoo export --format pt2`")
            elif name.endswith(".pt") and "/sample_inputs/" in name:
                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception:
                    raise TlzooError(f"{path}: {name} is a pickle that does not load safely (weights_only)",
                                     "tlzoo does not run code from model files; export the run again") from None


def load(path: Path) -> torch.nn.Module:
    """The exported program as a callable module (after the pickle check)."""
    _refuse_pickles(path)
    try:
        return torch.export.load(str(path)).module()
    except Exception as exc:
        raise TlzooError(f"cannot load {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                         "load it with the torch version that exported it (see its metadata)") from None


def runner(path: Path):
    """numpy batch -> [numpy logits] or [logits, OOD scores], through the loaded program."""
    module = load(path)

    def run(batch):
        with torch.inference_mode():
            out = module(torch.from_numpy(batch))
        return [t.float().numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]

    return run
