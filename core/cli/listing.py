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

HEADERS = ["name", "plugin", "weights", "params", "input"]


def format_count(count) -> str:
    if not count:
        return "-"
    return f"{count / 1e6:.1f}M"


def collect_rows() -> tuple[list[dict], bool]:
    """Every registered backbone's listing facts, and whether every plugin loaded (only then may they be cached)."""
    from tlzoo.registry import get_registry

    registry = get_registry()
    rows = []
    for component in registry.backbones.list():
        info = component.info() if component.info else {}
        rows.append({"name": component.name, "plugin": component.plugin, "weights": info.get("weights", "?"),
                     "params": info.get("params"), "input": info.get("input_size"),
                     "sources": info.get("sources", [])})
    complete = all(plugin.status != "failed" for plugin in registry.plugins)
    return rows, complete


def all_rows() -> list[dict]:
    """The rows from the cache when it is current, else collected (and cached)."""
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
    """Rows as dicts (name, plugin, weights, params, input) of the backbones that pass the filters."""
    out = []
    for row in all_rows():
        if pattern and not fnmatch.fnmatch(row["name"], pattern):
            continue
        weights = weights_status(row)
        if pretrained and weights == "none":
            continue
        if offline and weights not in ("shipped", "cached"):
            continue
        out.append({"name": row["name"], "plugin": row["plugin"], "weights": weights,
                    "params": row.get("params"), "input": row.get("input")})
    return out


def backbone_rows(pattern: str | None, pretrained: bool = False, offline: bool = False) -> list[list[str]]:
    return [[row["name"], row["plugin"], row["weights"], format_count(row["params"]),
             str(row["input"]) if row["input"] else "-"]
            for row in matching_backbones(pattern, pretrained, offline)]
