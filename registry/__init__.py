"""tlzoo's plugin host: hook specifications, the plugin manager and the catalogs.

A plugin author needs one import: `from tlzoo.registry import hookimpl, Component`.
"""

from __future__ import annotations

import dataclasses
import functools

from tlzoo.registry.catalog import Catalog, Component, DuplicateComponent, NoOptions, UnknownComponent, natural_key
from tlzoo.registry.hookspecs import hookimpl, hookspec, names_under
from tlzoo.registry.plugins import DEFAULT_PLUGINS, PluginError, PluginInfo, make_plugin_manager

__all__ = [
    "Catalog", "Component", "DuplicateComponent", "NoOptions", "UnknownComponent", "natural_key",
    "hookimpl", "hookspec", "names_under", "DEFAULT_PLUGINS", "PluginError", "PluginInfo",
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

    def component(self, kind: str, name: str) -> Component:
        """One component by name. Until the whole catalog is needed, only the plugins that may register
        `name` run: one marked `names_under(prefix)` is skipped for a name outside its prefix."""
        if kind not in self._catalogs:
            found = self._build(kind, only=name).get(name)
            if found is not None:
                return found
        return self.catalog(kind).get_component(name)

    def _resolve_backbone(self, name: str) -> Component | None:
        return self.pm.hook.resolve_backbone(name=name)

    def _build(self, kind: str, only: str | None = None) -> Catalog:
        """The catalog of `kind`; with `only`, of the plugins whose names may include that one."""
        noun, hook_name = KINDS[kind]
        catalog = Catalog(noun, self._resolve_backbone if kind == "backbones" else None)
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():  # registration order
            plugin_name = impl.plugin_name
            prefix = getattr(impl.function, "tlzoo_names_under", "")
            if only is not None and not only.startswith(prefix):
                continue

            def register(component, _plugin=plugin_name, _prefix=prefix):
                if isinstance(component, Component):
                    if not component.name.startswith(_prefix):  # the mark is a promise that lookups rely on
                        raise PluginError(f"plugin {_plugin!r} registered the {noun} {component.name!r} outside "
                                          f"its declared names_under({_prefix!r})")
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
