"""From raw JSON to a Resolved spec: validate the models, look each component up, check its options.

All problems are collected and raised together as one SpecError, each with its
dotted location, so a user fixes them in one round.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tlzoo.errors import SpecError
from tlzoo.spec.models import MAX_NAME, RunSpec
from tlzoo.spec.problems import blame_overrides, dedupe, problems_from, shorten
from tlzoo.spec.reading import load_raw


class ResolvedComponent:
    """A catalog entry together with its validated options."""

    def __init__(self, component, options: BaseModel):
        self.component = component
        self.options = options

    @property
    def name(self) -> str:
        return self.component.name

    def build(self, *args, **kwargs):
        return self.component.build(self.options, *args, **kwargs)


class Resolved:
    """A validated spec with its components looked up in the registry."""

    def __init__(self, spec: RunSpec, base_dir: Path, backbone, reader, strategy, loggers=()):
        self.spec = spec
        self.base_dir = base_dir
        self.backbone = backbone
        self.reader = reader
        self.strategy = strategy
        self.loggers = list(loggers)  # ResolvedComponent per spec.loggers entry, in order

    def path(self, value: str) -> Path:
        """A path from the spec: relative ones are relative to the spec file's folder."""
        path = Path(value).expanduser()
        return Path(os.path.normpath(path if path.is_absolute() else self.base_dir / path))


# (attribute on Resolved, path of the ComponentRef inside the spec, catalog kind)
COMPONENT_FIELDS = (
    ("backbone", ("backbone",), "backbones"),
    ("reader", ("data", "reader"), "readers"),
    ("strategy", ("train", "strategy"), "strategies"),
)


def resolve_components(spec: RunSpec, registry) -> tuple[dict, list[tuple[str, str]]]:
    from tlzoo.registry import UnknownComponent  # the CLI layer owns pluggy; core only asks

    found, problems = {}, []
    for attr, path, kind in COMPONENT_FIELDS:
        ref = spec
        for part in path:
            ref = getattr(ref, part)
        loc = ".".join(path)
        try:
            component = registry.catalog(kind).get_component(ref.name)
        except UnknownComponent as exc:
            problems.append((f"{loc}.name", str(exc)))
            continue
        try:
            found[attr] = ResolvedComponent(component, component.options.model_validate(ref.options))
        except ValidationError as exc:
            problems += problems_from(exc, tuple(path) + ("options",), component.options)
    found["loggers"] = []
    for index, ref in enumerate(spec.loggers):
        try:
            component = registry.catalog("loggers").get_component(ref.name)
            found["loggers"].append(ResolvedComponent(component, component.options.model_validate(ref.options)))
        except UnknownComponent as exc:
            problems.append((f"loggers.{index}.name", str(exc)))
        except ValidationError as exc:
            problems += problems_from(exc, ("loggers", index, "options"), component.options)
    return found, problems


def validate_extras(spec: RunSpec) -> list[tuple[str, str]]:
    """Checks beyond one field's type: the augmentation list validates per op; head_first fits a linear head."""
    from tlzoo.data.transforms import validate_augment

    problems = [("data.augment" + loc, msg) for loc, msg in validate_augment(spec.data.augment)]
    if spec.train.head_first.epochs and spec.head.hidden:
        problems.append(("train.head_first.epochs", f"fits a linear head, and head.hidden ({spec.head.hidden}) "
                         "gives the head a hidden layer: remove head.hidden, or set train.head_first.epochs to 0"))
    return problems


def output_problems(output: str, base_dir: Path) -> list[tuple[str, str]]:
    """`output` must be (or become) a folder: a file there, or above it, makes a run fail late."""
    path = Path(output).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        for folder in (path, *path.parents):
            if folder.exists():
                if not folder.is_dir():
                    return [("output", f"{shorten(str(folder), 200)} is a file, not a folder: "
                                       "no run directory can be made in it")]
                break
    except OSError as exc:  # a name too long for the file system, say
        return [("output", f"{shorten(output, 200)}: {exc.strerror}")]
    return []


def spec_base_dir(spec_folder: Path, base_dir: Any) -> Path:
    """Where the spec's relative paths start: its `base_dir` (a run directory's spec.json, a --write-spec file
    sets it; relative to the spec's folder), else the spec file's folder."""
    if not isinstance(base_dir, str):
        return Path(spec_folder)
    return Path(os.path.normpath(Path(spec_folder) / Path(base_dir).expanduser()))


def augment_problems(raw: dict) -> list[tuple[str, str]]:
    """data.augment's problems from the raw spec, for when another field's error stopped the model's validation."""
    data = raw.get("data")
    augment = data.get("augment") if isinstance(data, dict) else None
    if isinstance(augment, str) or (isinstance(augment, list) and all(isinstance(op, dict) for op in augment)):
        from tlzoo.data.transforms import validate_augment

        return [("data.augment" + loc, msg) for loc, msg in validate_augment(augment)]
    return []  # absent, or a type the model's validation already reports


def resolve_spec(raw: Any, registry, base_dir: Path, source: str = "spec", overrides: list[str] = ()) -> Resolved:
    if not isinstance(raw, dict):
        raise SpecError([("", "the spec must be a JSON object")], source)
    try:
        spec = RunSpec.model_validate(raw)
    except ValidationError as exc:
        # still check the component names we can read, so all errors come at once
        problems = problems_from(exc, model=RunSpec) + _names_only(raw, registry) + augment_problems(raw)
        raise SpecError(dedupe(blame_overrides(problems, list(overrides))), source) from None
    base_dir = spec_base_dir(base_dir, spec.base_dir)
    found, problems = resolve_components(spec, registry)
    problems += validate_extras(spec) + output_problems(spec.output, base_dir)
    if problems:
        raise SpecError(dedupe(blame_overrides(problems, list(overrides))), source)
    return Resolved(spec, base_dir, found["backbone"], found["reader"], found["strategy"], found["loggers"])


def _names_only(raw: dict, registry) -> list[tuple[str, str]]:
    from tlzoo.registry import UnknownComponent

    problems = []
    for _, path, kind in COMPONENT_FIELDS:
        ref = raw
        for part in path:
            ref = ref.get(part) if isinstance(ref, dict) else None
        name = ref if isinstance(ref, str) else ref.get("name") if isinstance(ref, dict) else None
        if isinstance(name, str):
            try:
                registry.catalog(kind).get_component(name)
            except UnknownComponent as exc:
                problems.append((".".join(path) + ".name", str(exc)))
    loggers = raw.get("loggers")
    for index, ref in enumerate(loggers if isinstance(loggers, list) else []):
        name = ref if isinstance(ref, str) else ref.get("name") if isinstance(ref, dict) else None
        if isinstance(name, str):
            try:
                registry.catalog("loggers").get_component(name)
            except UnknownComponent as exc:
                problems.append((f"loggers.{index}.name", str(exc)))
    return problems


def load_spec(path: str | Path, registry, overrides: list[str] = ()) -> Resolved:
    path = Path(path)
    source = str(path)
    resolved = resolve_spec(load_raw(path, overrides), registry, path.resolve().parent, source, overrides)
    if resolved.spec.name is None:
        resolved.spec.name = default_name(path)
    return resolved


def default_name(path: Path) -> str:
    """The spec file's stem, made a valid run name."""
    name = "".join(char if ord(char) >= 32 and char not in "/\\" else "_" for char in path.stem)[:MAX_NAME]
    return name if name not in ("", ".", "..") else "run"
