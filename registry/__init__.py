"""tlzoo's plugin host: hook specifications, the plugin manager and the catalogs.

A plugin author needs one import: `from tlzoo.registry import hookimpl, Component`.
"""

from __future__ import annotations

import dataclasses
import functools

from tlzoo.registry.catalog import Catalog, Component, DuplicateComponent, NoOptions, UnknownComponent, natural_key
from tlzoo.registry.hookspecs import hookimpl, hookspec
from tlzoo.registry.plugins import DEFAULT_PLUGINS, PluginError, PluginInfo, make_plugin_manager

__all__ = [
    "Catalog", "Component", "DuplicateComponent", "NoOptions", "UnknownComponent", "natural_key",
    "hookimpl", "hookspec", "DEFAULT_PLUGINS", "PluginError", "PluginInfo",
    "Registry", "get_registry", "reset_registry",
]

KINDS = {
    "backbones": ("backbone", "register_backbones"),
    "readers": ("dataset reader", "register_dataset_readers"),
    "strategies": ("freeze strategy", "register_freeze_strategies"),
    "loggers": ("logger", "register_loggers"),
}


class Registry:
    """The loaded plugins and one lazily built catalog per kind of component."""

    def __init__(self):
        self.pm, self.plugins = make_plugin_manager()
        self._catalogs: dict[str, Catalog] = {}

    def catalog(self, kind: str) -> Catalog:
        if kind not in self._catalogs:
            self._catalogs[kind] = self._build(kind)
        return self._catalogs[kind]

    @property
    def backbones(self) -> Catalog:
        return self.catalog("backbones")

    @property
    def readers(self) -> Catalog:
        return self.catalog("readers")

    @property
    def strategies(self) -> Catalog:
        return self.catalog("strategies")

    def _resolve_backbone(self, name: str) -> Component | None:
        return self.pm.hook.resolve_backbone(name=name)

    def _build(self, kind: str) -> Catalog:
        noun, hook_name = KINDS[kind]
        catalog = Catalog(noun, self._resolve_backbone if kind == "backbones" else None)
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():  # registration order
            plugin_name = impl.plugin_name

            def register(component, _plugin=plugin_name):
                if isinstance(component, Component):
                    component = dataclasses.replace(component, plugin=_plugin)
                catalog.add(component)

            impl.function(register=register)
        return catalog


@functools.lru_cache(maxsize=1)
def get_registry() -> Registry:
    return Registry()


def reset_registry() -> None:
    """Forget loaded plugins (tests and long-lived processes that install plugins)."""
    get_registry.cache_clear()
