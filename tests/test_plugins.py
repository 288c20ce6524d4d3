"""Plugin loading: built-ins, entry points, failure isolation, strict mode, allowlist."""

from __future__ import annotations

import os

import pytest

from conftest import run_cli


def env_with(faulty_plugins, allow: str, **extra) -> dict:
    path = os.pathsep.join(filter(None, [str(faulty_plugins), os.environ.get("PYTHONPATH", "")]))
    return {"PYTHONPATH": path, "TLZOO_LOAD_PLUGINS": allow, **extra}


def test_builtins_are_listed_as_loaded_plugins():
    result = run_cli("list", "plugins", env={"TLZOO_LOAD_PLUGINS": ""})
    assert result.returncode == 0, result.stderr
    from tlzoo.registry import DEFAULT_PLUGINS

    for module in DEFAULT_PLUGINS:
        short = module.rsplit(".", 1)[-1]
        assert any(line.split()[:3] == [short, "builtin", "loaded"] for line in result.stdout.splitlines()), short


def test_plugin_raising_on_import_is_isolated(faulty_plugins):
    env = env_with(faulty_plugins, "test_broken")
    listing = run_cli("list", "strategies", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "head_only" in listing.stdout  # built-ins keep working
    assert "plugin 'test_broken' (tlzoo-test-broken 0.0.1) failed to load" in listing.stderr
    plugins = run_cli("list", "plugins", env=env)
    line = next(l for l in plugins.stdout.splitlines() if l.startswith("test_broken"))
    assert "tlzoo-test-broken 0.0.1" in line and "failed" in line
    assert "RuntimeError: this plugin is broken on purpose" in line


def test_strict_mode_makes_a_broken_plugin_fatal(faulty_plugins):
    result = run_cli("list", "strategies", env=env_with(faulty_plugins, "test_broken", TLZOO_STRICT_PLUGINS="1"))
    assert result.returncode == 2
    assert "plugin 'test_broken' (tlzoo-test-broken 0.0.1) failed to load" in result.stderr
    assert "Traceback" not in result.stderr


def test_misspelt_hook_fails_loudly(faulty_plugins):
    env = env_with(faulty_plugins, "test_misspelt")
    plugins = run_cli("list", "plugins", env=env)
    assert plugins.returncode == 0
    line = next(l for l in plugins.stdout.splitlines() if l.startswith("test_misspelt"))
    assert "failed" in line and "register_backbone" in line
    assert "test_misspelt" in plugins.stderr
    strict = run_cli("list", "plugins", env=env_with(faulty_plugins, "test_misspelt", TLZOO_STRICT_PLUGINS="1"))
    assert strict.returncode == 2 and "register_backbone" in strict.stderr


def test_duplicate_name_names_both_plugins(faulty_plugins):
    result = run_cli("list", "strategies", env=env_with(faulty_plugins, "test_duplicate"))
    assert result.returncode == 2
    assert ("Duplicate freeze strategy name 'head_only': registered by plugin 'freeze_strategies' "
            "and by plugin 'test_duplicate'") in result.stderr
    assert "Traceback" not in result.stderr


def test_allowlist_skips_plugins_not_named(faulty_plugins):
    result = run_cli("list", "plugins", env=env_with(faulty_plugins, "test_duplicate"))
    lines = {l.split()[0]: l for l in result.stdout.splitlines()[1:]}
    assert "skipped" in lines["test_broken"] and "skipped" in lines["test_misspelt"]
    assert "loaded" in lines["test_duplicate"]


def test_in_process_plugin_registration_and_unregistration():
    from tlzoo.registry import Component, get_registry, hookimpl, reset_registry

    class Throwaway:
        @hookimpl
        def register_freeze_strategies(self, register):
            register(Component("throwaway", "only for this test", lambda options: None))

    registry = get_registry()
    registry.pm.register(Throwaway(), name="throwaway-plugin")
    try:
        strategy = registry.strategies.get_component("throwaway")
        assert strategy.plugin == "throwaway-plugin"
    finally:
        registry.pm.unregister(name="throwaway-plugin")
        reset_registry()
    assert "throwaway" not in get_registry().strategies


def test_registering_something_that_is_not_a_component_names_the_plugin():
    from tlzoo.registry import get_registry, hookimpl

    class Wrong:
        @hookimpl
        def register_freeze_strategies(self, register):
            register({"name": "dict-instead-of-component"})

    registry = get_registry()
    registry.pm.register(Wrong(), name="wrong-plugin")
    with pytest.raises(TypeError, match="registered a dict"):
        registry.strategies


def test_looking_up_one_backbone_runs_only_the_plugins_that_may_hold_it():
    """`tlzoo predict` of a lite run must not list timm's and torchvision's models (seconds of imports)."""
    from tlzoo.registry import Component, PluginError, Registry, hookimpl, names_under

    class Prefixed:
        @hookimpl
        @names_under("mine/")
        def register_backbones(self, register):
            register(Component("mine/net", "a test backbone", lambda options, weights="none": None))
            if self.stray:
                register(Component("stray", "a name outside the promised prefix", lambda options, weights: None))

        stray = False

    registry = Registry()
    plugin = Prefixed()
    registry.pm.register(plugin, name="prefixed-plugin")
    ran = []
    for impl in registry.pm.hook.register_backbones.get_hookimpls():
        def recording(register, _impl=impl, _function=impl.function):
            ran.append(_impl.plugin_name)
            return _function(register=register)

        recording.tlzoo_names_under = getattr(impl.function, "tlzoo_names_under", "")
        impl.function = recording
    assert registry.component("backbones", "efficientnet_lite0").plugin == "shipped_backbones"
    assert {"timm_backbones", "torchvision_backbones", "prefixed-plugin"}.isdisjoint(ran)
    assert "shipped_backbones" in ran  # a plugin without a prefix may hold any name: it runs
    ran.clear()
    assert registry.component("backbones", "mine/net").plugin == "prefixed-plugin"
    assert "prefixed-plugin" in ran and "timm_backbones" not in ran
    plugin.stray = True
    with pytest.raises(PluginError, match="'prefixed-plugin' registered the backbone 'stray' outside its declared "
                                          "names_under"):
        registry.component("backbones", "mine/net")
