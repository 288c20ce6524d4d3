"""The run spec: pydantic models that name components and hold the protocol's settings.

Components are written `{"name": ..., "options": {...}}` (a bare string is
shorthand). The spec models keep options as plain dicts; `resolve_spec` looks
each name up in the registry and validates the options with that component's
own `Options` model, so third-party plugins validate exactly like built-ins.
All problems are collected and raised together as one SpecError.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tlzoo.errors import SpecError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentRef(StrictModel):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class WeightsFile(StrictModel):
    path: str = Field(description="A .safetensors, .pt or .pth state dict for the original network")


class BackboneSpec(ComponentRef):
    name: str = "efficientnet_lite0"
    weights: str | WeightsFile = Field(
        "pretrained",
        description="'pretrained' (the backbone's default), 'none', a named variant, or {'path': ...}",
    )


class HeadSpec(StrictModel):
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    hidden: int | None = Field(None, gt=0, description="width of an optional hidden layer")


class DataSpec(StrictModel):
    reader: ComponentRef
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int | None = Field(None, gt=0)
    num_workers: int | Literal["auto"] = "auto"
    augment: str | list[dict[str, Any]] = Field(
        "light", description="a preset name (none, light, seed001, strong) or a list of {'op': ..., ...}"
    )
    bad_files: Literal["skip", "error"] = "skip"
    max_bad_fraction: float = Field(0.01, ge=0.0, le=1.0)
    background: tuple[int, int, int] = (255, 255, 255)
    allow_empty_classes: bool = False


class OptimizerSpec(StrictModel):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False


class SchedulerSpec(StrictModel):
    name: Literal["none", "step", "cosine", "onecycle"] = "cosine"
    step_size: int = Field(5, gt=0, description="epochs between decays (step)")
    gamma: float = Field(0.5, gt=0, le=1, description="decay factor (step)")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up (cosine)")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr as a fraction of lr (cosine)")


class EarlyStoppingSpec(StrictModel):
    patience: int | None = Field(None, gt=0, description="epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0)


class TrainSpec(StrictModel):
    strategy: ComponentRef = ComponentRef(name="head_only")
    epochs: int = Field(10, gt=0)
    optimizer: OptimizerSpec = OptimizerSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    backbone_lr_mult: float = Field(0.1, gt=0, description="backbone lr = lr x this (discriminative lr)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] = "none"
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    bn: Literal["frozen", "train"] = Field("frozen", description="BatchNorm of frozen groups")
    monitor: Literal["val_top1", "val_loss"] = "val_top1"
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")


class CacheSpec(StrictModel):
    enabled: bool | Literal["auto"] = "auto"
    views: int = Field(4, gt=0, description="augmented views cached per image when augmentation is random")
    memory_mb: int = Field(2048, ge=0, description="RAM for cached activations before spilling to disk")
    dir: str | None = Field(None, description="where the cache lives (default: ~/.cache/tlzoo)")


class RunSpec(StrictModel):
    name: str | None = Field(None, description="run name (default: the spec file's stem)")
    backbone: BackboneSpec = BackboneSpec()
    head: HeadSpec = HeadSpec()
    data: DataSpec
    train: TrainSpec = TrainSpec()
    cache: CacheSpec = CacheSpec()
    output: str = Field("runs", description="folder that receives one run directory per run")
    base_dir: str | None = Field(None, description="folder that relative paths start from (default: the spec "
                                                   "file's folder); a run directory's spec.json sets it")


def format_loc(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


def problems_from(error: ValidationError, prefix: tuple = ()) -> list[tuple[str, str]]:
    out = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if part not in ("function-after", "function-before"))
        out.append((format_loc(prefix + loc), item["msg"]))
    return out


def parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError([("", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")], source)


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.epochs=5' -> (['train', 'epochs'], 5); values are JSON, else strings."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ValueError(f"--set {item!r}: write KEY=VALUE with a dotted key, e.g. --set train.epochs=5")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str], source: str) -> dict:
    problems = []
    for item in overrides:
        try:
            keys, value = parse_override(item)
        except ValueError as exc:
            problems.append(("--set", str(exc)))
            continue
        target = raw
        for key in keys[:-1]:
            current = target.get(key)
            if isinstance(current, str) and key in ("reader", "strategy", "backbone"):
                current = {"name": current}  # let --set reach into the shorthand
            if current is None:
                current = {}
            if not isinstance(current, dict):
                problems.append((".".join(keys), f"--set cannot go inside {key!r}, which is not an object"))
                break
            target[key] = current
            target = current
        else:
            target[keys[-1]] = value
    if problems:
        raise SpecError(problems, source)
    return raw


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

    def __init__(self, spec: RunSpec, base_dir: Path, backbone, reader, strategy):
        self.spec = spec
        self.base_dir = base_dir
        self.backbone = backbone
        self.reader = reader
        self.strategy = strategy

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
            problems += problems_from(exc, tuple(path) + ("options",))
    return found, problems


def validate_extras(spec: RunSpec) -> list[tuple[str, str]]:
    """Checks beyond one field's type: the augmentation list validates per op."""
    from tlzoo.data.transforms import validate_augment

    return [("data.augment" + loc, msg) for loc, msg in validate_augment(spec.data.augment)]


def resolve_spec(raw: Any, registry, base_dir: Path, source: str = "spec") -> Resolved:
    if not isinstance(raw, dict):
        raise SpecError([("", "the spec must be a JSON object")], source)
    try:
        spec = RunSpec.model_validate(raw)
    except ValidationError as exc:
        # still check the component names we can read, so all errors come at once
        problems = problems_from(exc) + _names_only(raw, registry)
        raise SpecError(_dedupe(problems), source) from None
    if spec.base_dir is not None:  # a run directory's spec.json: paths start where the original's did
        base_dir = Path(os.path.normpath(Path(base_dir) / Path(spec.base_dir).expanduser()))
    found, problems = resolve_components(spec, registry)
    problems += validate_extras(spec)
    if problems:
        raise SpecError(problems, source)
    return Resolved(spec, base_dir, found["backbone"], found["reader"], found["strategy"])


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
    return problems


def _dedupe(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(problems))


def load_spec(path: str | Path, registry, overrides: list[str] = ()) -> Resolved:
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SpecError([("", f"spec file {source} does not exist")], source) from None
    except OSError as exc:
        raise SpecError([("", f"cannot read spec file {source}: {exc.strerror}")], source) from None
    raw = parse_json(text, source)
    if isinstance(raw, dict):
        raw = apply_overrides(raw, list(overrides), source)
    resolved = resolve_spec(raw, registry, path.resolve().parent, source)
    if resolved.spec.name is None:
        resolved.spec.name = path.stem
    return resolved
