"""A plugin whose hook name is misspelt (register_backbone without the s)."""

from tlzoo.registry import hookimpl


@hookimpl
def register_backbone(register):
    raise AssertionError("a misspelt hook must never be called")
