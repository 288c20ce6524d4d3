"""A plugin that registers a name tlzoo already has."""

from tlzoo.registry import Component, hookimpl


@hookimpl
def register_freeze_strategies(register):
    register(Component("head_only", "a second head_only", lambda options: None))
