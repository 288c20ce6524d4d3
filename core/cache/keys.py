"""Cache keys: everything that decides a cached tensor's value, hashed.

A key changes when any input changes: the network prefix (its architecture
and the exact values of its parameters and buffers, so a prefix trained
earlier in the run is never mistaken for the pretrained one), the transform,
the stage boundary, the precision, and every data file's path, size,
modification time, status-change time and inode. A file replaced by another of
the same size with its mtime set back still has a new ctime (the kernel sets
it on every write, rename or utime, and nothing can set it back) and, when it
was renamed into place, a new inode. A stale entry is then simply never found again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch
from torch import nn

KEY_FORMAT = "tlzoo-cache/2"  # /2: files fingerprinted with ctime and inode too
# repr() of a lambda or a plain object holds its memory address, which differs every run
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def digest(value) -> str:
    """A short stable hash of a JSON-able value."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def modules_fingerprint(modules: list[nn.Module]) -> str:
    """Architecture (repr) and the exact bytes of every parameter and buffer."""
    sha = hashlib.sha256()
    for index, module in enumerate(modules):
        sha.update(f"{index}:{module!r}".encode())
        for name, tensor in module.state_dict().items():
            data = tensor.detach().cpu().contiguous().reshape(-1)
            sha.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
            sha.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return sha.hexdigest()[:32]


def files_fingerprint(paths: list[Path]) -> str:
    """Each file's path, size, mtime, ctime and inode, in order (all from one stat); a missing file counts too."""
    sha = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
            sha.update(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|"
                       f"{stat.st_dev}:{stat.st_ino}\n".encode())
        except OSError:
            sha.update(f"{path}|missing\n".encode())
    return sha.hexdigest()[:32]


def transform_description(transform) -> tuple[str, bool]:
    """(description, stable): torchvision-style transforms describe themselves with repr().

    A description holding a memory address (a lambda, an object without
    __repr__) is not stable across runs; such a cache is used within the run only.
    """
    text = repr(transform)
    return _ADDRESS.sub(" at 0x?", text), _ADDRESS.search(text) is None
