"""Catalogs: plain dicts of named components, with globbing and did-you-mean."""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pydantic import BaseModel, ConfigDict


class NoOptions(BaseModel):
    """Options model for components that take none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Component:
    """One registered thing: a backbone, a dataset reader or a freeze strategy.

    `build(options)` receives a validated instance of `options`; what it returns
    depends on the kind (see tlzoo.model.backbone, tlzoo.data.samples, tlzoo.model.freeze).
    `info` is an optional cheap callable giving listing columns (never builds a model).
    """

    name: str
    description: str
    build: Callable[..., Any]
    options: type[BaseModel] = NoOptions
    info: Callable[[], dict] | None = None
    plugin: str = ""
    extra: dict = field(default_factory=dict)


class UnknownComponent(LookupError):
    """A name that no plugin provides; the message says what to do."""


class DuplicateComponent(ValueError):
    """Two plugins registered the same name."""


def natural_key(text: str) -> list:
    """Sort key that orders resnet18 before resnet101."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


class Catalog(dict):
    """Name -> Component for one kind; `kind` is the noun used in messages."""

    def __init__(self, kind: str, resolver: Callable[[str], Component | None] | None = None):
        super().__init__()
        self.kind = kind
        self.resolver = resolver

    def add(self, component: Component) -> None:
        if not isinstance(component, Component):
            raise TypeError(
                f"plugin {component!r} registered a {type(component).__name__} as a {self.kind}; "
                "register tlzoo.registry.Component instances"
            )
        if component.name in self:
            first = self[component.name].plugin
            raise DuplicateComponent(
                f"Duplicate {self.kind} name {component.name!r}: registered by plugin "
                f"{first!r} and by plugin {component.plugin!r}. Rename one of them or "
                "uninstall one plugin (TLZOO_LOAD_PLUGINS limits which are loaded)."
            )
        self[component.name] = component

    def list(self, pattern: str | None = None) -> list[Component]:
        names: Iterable[str] = self
        if pattern:
            names = fnmatch.filter(names, pattern)
        return [self[name] for name in sorted(names, key=natural_key)]

    def get_component(self, name: str) -> Component:
        if name in self:
            return self[name]
        if self.resolver is not None:
            found = self.resolver(name)
            if found is not None:
                return found
        raise UnknownComponent(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        close = closest(name, list(self))
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        plural = {"dataset reader": "readers", "freeze strategy": "strategies"}.get(self.kind, self.kind + "s")
        return f"Unknown {self.kind} {shown_name(name)}.{hint} Run 'tlzoo list {plural}'."


def shown_name(name: str, limit: int = 80) -> str:
    """repr of a name for messages, cut when long (a 100 KB name must not fill the terminal)."""
    return repr(name) if len(name) <= limit else f"{name[:limit]!r}... ({len(name)} characters)"


MAX_MATCHED = 200


def _similarity(word: str, candidate: str) -> float:
    ratio = difflib.SequenceMatcher(None, word, candidate).ratio()
    if "/" not in word and "/" in candidate:
        # a bare 'resnet50' should find 'torchvision/resnet50' and 'timm/resnet50'
        ratio = max(ratio, difflib.SequenceMatcher(None, word, candidate.rsplit("/", 1)[-1]).ratio())
    return ratio


def closest(word: str, candidates: list[str], cutoff: float = 0.6, margin: float = 0.05) -> list[str]:
    """The best matches only: those scoring within `margin` of the best one, at most five.

    Words longer than MAX_MATCHED get none: difflib is quadratic, and a 100 KB name
    took 44 s against every timm name (no real name is that long).
    """
    if len(word) > MAX_MATCHED:
        return []
    scored = [(ratio, c) for c in candidates if (ratio := _similarity(word, c)) >= cutoff]
    if not scored:
        return []
    best = max(ratio for ratio, _ in scored)
    ranked = sorted(scored, key=lambda rc: (-rc[0], natural_key(rc[1])))
    return [c for r, c in ranked if r >= best - margin][:5]
