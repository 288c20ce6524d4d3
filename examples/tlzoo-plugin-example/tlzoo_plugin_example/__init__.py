"""An example third-party tlzoo plugin: one backbone, one dataset reader and one run logger.

Installed, it is found through the entry point in pyproject.toml:

    [project.entry-points.tlzoo]
    example = "tlzoo_plugin_example"

tlzoo imports this module at every start, so it stays light: torch is only
imported inside the builders (see tinynet.py).
"""

from __future__ import annotations

from tlzoo.registry import Component, hookimpl

from .epoch_log import EpochLog, EpochLogOptions
from .jsonl import JsonlOptions, read_jsonl
from .tinynet import TinyNetOptions, build_tinynet, describe_tinynet


@hookimpl
def register_backbones(register):
    register(Component(
        name="example/tinynet",
        description="a four-stage toy CNN (random weights), to show how a backbone plugin is written",
        build=build_tinynet,
        options=TinyNetOptions,
        info=describe_tinynet,
    ))


@hookimpl
def register_dataset_readers(register):
    register(Component(
        name="example/jsonl",
        description="JSON Lines lists: one {\"path\": ..., \"label\": ...} object per line",
        build=read_jsonl,
        options=JsonlOptions,
    ))


@hookimpl
def register_loggers(register):
    register(Component(
        name="example/epoch_log",
        description="one JSON line per run event (start, every epoch, end) in the run directory",
        build=EpochLog,
        options=EpochLogOptions,
    ))
