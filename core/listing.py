"""Rows for `tlzoo list backbones`: cheap metadata only, no model is built."""

from __future__ import annotations


def format_count(count) -> str:
    if not count:
        return "-"
    return f"{count / 1e6:.1f}M"


def backbone_rows(pattern: str | None, pretrained: bool = False, offline: bool = False) -> list[list[str]]:
    from tlzoo.registry import get_registry

    rows = []
    for component in get_registry().backbones.list(pattern):
        info = component.info() if component.info else {}
        weights = info.get("weights", "?")
        if pretrained and weights == "none":
            continue
        if offline and weights not in ("shipped", "cached"):
            continue
        size = info.get("input_size")
        rows.append([component.name, component.plugin, weights, format_count(info.get("params")),
                     str(size) if size else "-"])
    return rows
