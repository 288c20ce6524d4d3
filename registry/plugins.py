"""The plugin manager: built-in plugins, entry-point plugins, failure isolation."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from dataclasses import dataclass
from importlib import metadata

import pluggy

from tlzoo.registry import hookspecs

# Built-ins are registered exactly like third-party plugins, only found here
# instead of through an entry point.
DEFAULT_PLUGINS = {  # plugin name -> module
    "shipped_backbones": "tlzoo.plugins.lite.backbones",
    "torchvision_backbones": "tlzoo.plugins.torchvision.backbones",
    "timm_backbones": "tlzoo.plugins.timm.backbones",
    "freeze_strategies": "tlzoo.plugins.freeze_strategies",
    "dataset_readers": "tlzoo.plugins.readers.formats",
    "metrics_logger": "tlzoo.plugins.loggers.metrics",
    "tensorboard_logger": "tlzoo.plugins.loggers.tensorboard",
}
ENTRY_POINT_GROUP = "tlzoo"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    source: str  # "builtin" or the distribution "name version"
    status: str  # "loaded", "failed" or "skipped"
    error: str = ""


class PluginError(RuntimeError):
    """A third-party plugin failed while TLZOO_STRICT_PLUGINS=1, or a plugin broke a promise it made."""


def strict() -> bool:
    return os.environ.get("TLZOO_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


def allowlist() -> set[str] | None:
    value = os.environ.get("TLZOO_LOAD_PLUGINS")
    if value is None:
        return None
    return {item.strip() for item in value.split(",") if item.strip()}


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _dist_label(entry_point) -> str:
    dist = getattr(entry_point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


def make_plugin_manager() -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    pm = pluggy.PluginManager("tlzoo")
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    for name, module_name in DEFAULT_PLUGINS.items():
        pm.register(importlib.import_module(module_name), name=name)
        infos.append(PluginInfo(name, "builtin", "loaded"))
    pm.check_pending()  # a built-in with a misspelt hook is a tlzoo bug

    allowed = allowlist()
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        source = _dist_label(entry_point)
        dist_name = source.split(" ")[0]
        if allowed is not None and entry_point.name not in allowed and dist_name not in allowed:
            infos.append(PluginInfo(entry_point.name, source, "skipped", "not in TLZOO_LOAD_PLUGINS"))
            continue
        if pm.get_plugin(entry_point.name) is not None:
            continue  # the same distribution seen twice on sys.path
        try:
            plugin = entry_point.load()
            pm.register(plugin, name=entry_point.name)
            try:
                pm.check_pending()
            except pluggy.PluginValidationError:
                pm.unregister(name=entry_point.name)
                raise
        except Exception as exc:  # a broken plugin must not take tlzoo down
            message = _describe(exc)
            if strict():
                raise PluginError(
                    f"plugin {entry_point.name!r} ({source}) failed to load: {message}"
                ) from exc
            infos.append(PluginInfo(entry_point.name, source, "failed", message))
            print(
                f"tlzoo: warning: plugin {entry_point.name!r} ({source}) failed to load and is "
                f"ignored: {message}\n  HINT: fix or uninstall it; 'tlzoo list plugins' shows all "
                "plugins, TLZOO_STRICT_PLUGINS=1 makes this fatal.",
                file=sys.stderr,
            )
            continue
        infos.append(PluginInfo(entry_point.name, source, "loaded"))
    return pm, infos
