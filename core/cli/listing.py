"""Rows for `tlzoo list backbones`: cheap metadata only, no model is built.

Collecting the rows imports every backbone plugin's library (timm and
torchvision take seconds), so they are kept in a cache (tlzoo.cli.listing_cache)
and reused while nothing they depend on changed. Whether a backbone's weights
are in a local download cache is checked at every listing.
"""

from __future__ import annotations

import fnmatch

from tlzoo.cli import listing_cache
from tlzoo.model.hub import cached_file

# The table has no parameter count: timm gives none without building each model (about a
# second each, even on the meta device, for 1,371 models), so the column was '-' for most rows.
# Rows keep "params" where a plugin's info states it (torchvision's weights meta).
HEADERS = ["name", "plugin", "weights", "input"]


def row_of(name: str, plugin: str, info: dict) -> dict:
    return {"name": name, "plugin": plugin, "weights": info.get("weights", "?"), "params": info.get("params"),
            "input": info.get("input_size"), "sources": info.get("sources", [])}


def collect_rows() -> tuple[list[dict], bool]:
    """Every registered backbone's listing facts, and whether every plugin loaded (only then may they be cached).

    A backbone's `info()` may list `variants` (timm's pretrained tags, `timm/<name>.<tag>`), each
    a dict of the same facts with its own `name`; each is a row of its own.
    """
    from tlzoo.registry import get_registry

    registry = get_registry()
    rows = []
    for component in registry.backbones.list():
        info = component.info() if component.info else {}
        rows.append(row_of(component.name, component.plugin, info))
        rows += [row_of(variant["name"], component.plugin, variant) for variant in info.get("variants", [])]
    complete = all(plugin.status != "failed" for plugin in registry.plugins)
    return rows, complete


def all_rows() -> list[dict]:
    """The rows from the cache when it is current, else collected (and cached).

    The cache only saves building the registry: once this process has built it, the
    registry is the truth (components registered at run time, by a notebook or a test,
    are in it and in no cache).
    """
    from tlzoo.registry import get_registry

    if get_registry.cache_info().currsize:
        return collect_rows()[0]
    fingerprint = listing_cache.fingerprint()
    rows = listing_cache.load(fingerprint)
    if rows is None:
        rows, complete = collect_rows()
        if complete:  # a failed plugin must keep warning on every run
            listing_cache.save(fingerprint, rows)
    return rows


def weights_status(row: dict) -> str:
    """shipped / cached / download / none, with 'cached' looked up now."""
    if row["weights"] == "download" and any(cached_file(source) for source in row.get("sources", [])):
        return "cached"
    return row["weights"]


def matching_backbones(pattern: str | None, pretrained: bool = False, offline: bool = False) -> list[dict]:
    """Rows as dicts (name, plugin, weights, input, and params where the plugin states it) of the backbones
    that pass the filters."""
    out = []
    for row in all_rows():
        if pattern and not fnmatch.fnmatch(row["name"], pattern):
            continue
        weights = weights_status(row)
        if pretrained and weights == "none":
            continue
        if offline and weights not in ("shipped", "cached"):
            continue
        found = {"name": row["name"], "plugin": row["plugin"], "weights": weights, "input": row.get("input")}
        if row.get("params") is not None:  # only where the plugin states it: no model is built to count
            found["params"] = row["params"]
        out.append(found)
    return out


def backbone_rows(pattern: str | None, pretrained: bool = False, offline: bool = False) -> list[list[str]]:
    return [[row["name"], row["plugin"], row["weights"], str(row["input"]) if row["input"] else "-"]
            for row in matching_backbones(pattern, pretrained, offline)]
