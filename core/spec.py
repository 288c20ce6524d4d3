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
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from tlzoo.errors import SpecError


# Upper bounds keep a spec that validates from failing (or exhausting memory) once it runs;
# each is far above any real transfer-learning run.
MAX_EPOCHS = 10_000  # the strategy plan and the cache hold one small entry per epoch
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_LR = 100.0
MAX_HIDDEN = 65_536  # a hidden layer of 10^9 units would need terabytes
MAX_WORKERS = 256
MAX_NAME = 100
StrictInteger = Annotated[int, Strict()]  # `true` is not 1 epoch; "5" is not 5
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # ints welcome, bools, NaN and Infinity not
DEVICE = re.compile(r"(auto|cpu|cuda(:[0-9]{1,3})?)")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BareName(StrictModel):
    """A component written `{"name": ..., ...}` or just its name (a bare string)."""

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class ComponentRef(BareName):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class WeightsFile(StrictModel):
    path: str = Field(description="A .safetensors, .pt or .pth state dict for the original network")


class BackboneSpec(ComponentRef):
    name: str = "efficientnet_lite0"
    weights: str | WeightsFile = Field(
        "pretrained",
        description="'pretrained' (the backbone's default), 'none', a named variant, or {'path': ...}",
    )


class HeadSpec(StrictModel):
    dropout: Number = Field(0.0, ge=0.0, lt=1.0)
    hidden: StrictInteger | None = Field(None, gt=0, le=MAX_HIDDEN, description="width of an optional hidden layer")


class DataSpec(StrictModel):
    reader: ComponentRef
    batch_size: StrictInteger = Field(32, gt=0, le=65_536)
    eval_batch_size: StrictInteger | None = Field(None, gt=0, le=65_536)
    num_workers: StrictInteger | Literal["auto"] = Field("auto", description=f"'auto' or 0..{MAX_WORKERS}")
    augment: str | list[dict[str, Any]] = Field(
        "light", description="a preset name (none, light, rotate_flip, strong) or a list of {'op': ..., ...}"
    )
    bad_files: Literal["skip", "error"] = "skip"
    max_bad_fraction: Number = Field(0.01, ge=0.0, le=1.0)
    background: tuple[Annotated[int, Strict(), Field(ge=0, le=255)], ...] = Field(
        (255, 255, 255), min_length=3, max_length=3, description="RGB, each 0-255")
    allow_empty_classes: bool = False

    @field_validator("num_workers", mode="wrap")
    @classmethod
    def _worker_count(cls, value: Any, handler) -> Any:
        # one message instead of one per branch of the union
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_WORKERS):
            return handler(value)
        raise ValueError(f"{shorten(repr(value))} is not a worker count: use 'auto' or an integer 0..{MAX_WORKERS}")


class OptimizerSpec(BareName):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: Number = Field(1e-3, gt=0, le=MAX_LR)
    weight_decay: Number = Field(0.0, ge=0, le=MAX_LR)
    momentum: Number = Field(0.9, ge=0, lt=1)
    nesterov: bool = False


class SchedulerSpec(BareName):
    name: Literal["none", "step", "cosine", "onecycle"] = "cosine"
    step_size: StrictInteger = Field(5, gt=0, le=MAX_EPOCHS, description="epochs between decays (step)")
    gamma: Number = Field(0.5, gt=0, le=1, description="decay factor (step)")
    warmup_epochs: Number = Field(0.0, ge=0, le=MAX_EPOCHS, description="linear warm-up (cosine)")
    min_lr_ratio: Number = Field(0.0, ge=0, le=1, description="final lr as a fraction of lr (cosine)")


class EarlyStoppingSpec(StrictModel):
    patience: StrictInteger | None = Field(None, gt=0, le=MAX_EPOCHS,
                                           description="epochs without improvement before stopping")
    min_delta: Number = Field(0.0, ge=0)


class DistributedSpec(StrictModel):
    """How the processes of a torchrun job talk; ignored by a single-process run."""

    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="'auto': NCCL on CUDA, gloo on CPU")
    timeout_s: StrictInteger = Field(1800, ge=10, le=86_400, description="seconds a collective waits for the "
                                     "other processes before the job stops (a rank that died or hangs)")


class EmaSpec(StrictModel):
    """An exponential moving average of the trainable weights (timm's ModelEmaV3), validated every epoch."""

    enabled: bool = Field(False, description="keep the average; it becomes best when it validates better")
    decay: Number = Field(0.998, gt=0, lt=1, description="weight of the old average at each step")
    warmup: bool = Field(True, description="decay grows as 1 - (1 + step / warmup_gamma) ^ -warmup_power, "
                                           "capped at decay (timm's use_warmup)")
    warmup_gamma: Number = Field(1.0, gt=0, le=1e6)
    warmup_power: Number = Field(2 / 3, gt=0, le=10)
    update_after_step: StrictInteger = Field(0, ge=0, le=10**9, description="the average copies the weights "
                                             "until this step")


class MixSpec(StrictModel):
    """mixup/cutmix where the trainable part starts: images when nothing is frozen, else the (cached)
    activations of the frozen prefix (manifold mixup), so the activation cache still serves."""

    mixup_alpha: Number = Field(0.0, ge=0, le=100, description="Beta(alpha, alpha) mixing weights; 0: off")
    cutmix_alpha: Number = Field(0.0, ge=0, le=100, description="Beta(alpha, alpha) box areas on images or "
                                 "feature maps (pooled features get mixup); 0: off")
    prob: Number = Field(1.0, ge=0, le=1, description="chance that a batch is mixed")
    switch_prob: Number = Field(0.5, ge=0, le=1, description="with both on: chance of cutmix over mixup")


TTA_VIEWS = Literal["none", "flip", "flip_crops"]


class TrainSpec(StrictModel):
    strategy: ComponentRef = ComponentRef(name="head_only")
    epochs: StrictInteger = Field(10, gt=0, le=MAX_EPOCHS,
                                  description=f"at most {MAX_EPOCHS} (plans and caches keep an entry per epoch)")
    optimizer: OptimizerSpec = OptimizerSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    backbone_lr_mult: Number = Field(0.1, gt=0, le=MAX_LR, description="backbone lr = lr x this (discriminative lr)")
    label_smoothing: Number = Field(0.0, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] = "none"
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    bn: Literal["frozen", "train"] = Field("frozen", description="BatchNorm of frozen groups")
    monitor: Literal["val_top1", "val_loss"] = "val_top1"
    seed: StrictInteger = Field(0, ge=0, le=MAX_SEED)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    distributed: DistributedSpec = DistributedSpec()
    ema: EmaSpec = EmaSpec()
    mix: MixSpec = MixSpec()
    layer_decay: Number | None = Field(None, gt=0, le=1, description="fine-tuning: group g of G (head last) "
                                       "gets lr x layer_decay ^ (G - 1 - g) on top of backbone_lr_mult (timm's "
                                       "--layer-decay); none: off")
    tta: TTA_VIEWS = Field("none", description="test-time augmentation of the per-epoch validation: 'flip' "
                           "(2 views) or 'flip_crops' (6 views), probabilities averaged")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE.fullmatch(value):
            raise ValueError(f"{shorten(value)!r} is not a device tlzoo runs on: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value


class CacheSpec(StrictModel):
    enabled: bool | Literal["auto"] = "auto"
    views: StrictInteger = Field(4, gt=0, le=1000, description="augmented views cached per image when augmentation is random")
    memory_mb: StrictInteger = Field(2048, ge=0, le=2**30, description="RAM for cached activations before spilling to disk")
    dir: str | None = Field(None, description="where the cache lives (default: ~/.cache/tlzoo)")


class ReportSpec(StrictModel):
    enabled: bool = Field(True, description="write report.html (and its figures) into the run directory at the end")
    top_losses: StrictInteger = Field(16, ge=0, le=1000, description="validation images with the highest loss shown")


ALWAYS_ON_LOGGER = "metrics"  # metrics.jsonl/csv: the run directory's record of its epochs, read by the report


class RunSpec(StrictModel):
    name: str | None = Field(None, description="run name (default: the spec file's stem); one folder name, no '/'")
    backbone: BackboneSpec = BackboneSpec()
    head: HeadSpec = HeadSpec()
    data: DataSpec
    train: TrainSpec = TrainSpec()
    cache: CacheSpec = CacheSpec()
    report: ReportSpec = ReportSpec()
    loggers: list[ComponentRef] = Field(
        default_factory=lambda: [ComponentRef(name=ALWAYS_ON_LOGGER)],
        description="run loggers (tlzoo list loggers), e.g. [\"tensorboard\"]; 'metrics' is always added")
    output: str = Field("runs", min_length=1, description="folder that receives one run directory per run")
    base_dir: str | None = Field(None, description="folder that relative paths start from (default: the spec "
                                                   "file's folder); a run directory's spec.json sets it")

    @field_validator("name")
    @classmethod
    def _one_folder_name(cls, value: str | None) -> str | None:
        if value is not None:
            check_run_name(value)
        return value

    @field_validator("loggers")
    @classmethod
    def _metrics_always_on(cls, value: list[ComponentRef]) -> list[ComponentRef]:
        if any(ref.name == ALWAYS_ON_LOGGER for ref in value):
            return value
        return [*value, ComponentRef(name=ALWAYS_ON_LOGGER)]  # appended: loggers.N still names the user's entry N

    @field_validator("output")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("a path cannot contain a NUL character")
        return value


def check_run_name(value: str) -> None:
    """The run directory is `output/<name>`: the name must be one plain folder name."""
    if not value or len(value) > MAX_NAME:
        raise ValueError(f"a run name has 1 to {MAX_NAME} characters (this one has {len(value)})")
    if value in (".", "..") or any(sep in value for sep in ("/", "\\")):
        raise ValueError(f"{shorten(value)!r} is not one folder name: no '/', '\\', '.' or '..' "
                         "(the run directory must stay inside `output`)")
    if any(ord(char) < 32 for char in value):
        raise ValueError("a run name cannot contain control characters such as NUL or a newline")


def shorten(text: str, limit: int = 60) -> str:
    """Long user text cut for messages."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


MAX_SPEC_BYTES = 1 << 20  # a spec is a few KB; the cap keeps /dev/zero or a stray image from filling memory


def format_loc(loc: tuple) -> str:
    return ".".join(shorten(str(part)) for part in loc)


def problems_from(error: ValidationError, prefix: tuple = (), model: type[BaseModel] | None = None
                  ) -> list[tuple[str, str]]:
    """pydantic's errors as (dotted location, message); `model` is the one validated, for did-you-mean."""
    out = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if part not in ("function-after", "function-before"))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden" and model is not None and loc and isinstance(loc[-1], str):
            close = _close_field(loc[-1], _fields_at(model, loc[:-1]))
            if close:
                message += f". Did you mean: {', '.join(close)}?"
        out.append((format_loc(prefix + loc), message))
    return out


def _close_field(name: str, fields: list[str]) -> list[str]:
    from tlzoo.registry.catalog import closest

    return closest(name, fields) if len(name) <= 200 else []


def _fields_at(model: type[BaseModel], path: tuple) -> list[str]:
    """The field names of the model found at `path` inside `model` (list indices skipped)."""
    current: type[BaseModel] | None = model
    for part in path:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if current else None
        current = _model_in(field.annotation) if field else None
    return list(current.model_fields) if current else []


def _model_in(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def read_spec_text(path: Path, source: str) -> str:
    """The spec file's text: a regular UTF-8 file of at most MAX_SPEC_BYTES, read with a bounded read."""
    def refuse(message: str, hint: str | None = None):
        raise SpecError([("", message + (f"\n    HINT: {hint}" if hint else ""))], source)

    try:
        if path.exists() and not path.is_file():
            refuse(f"spec file {source} is {'a folder' if path.is_dir() else 'not a regular file'}",
                   "pass a JSON file")
        with open(path, "rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        refuse(f"spec file {source} does not exist")
    except OSError as exc:
        refuse(f"cannot read spec file {source}: {exc.strerror}")
    if len(data) > MAX_SPEC_BYTES:
        refuse(f"spec file {source} is larger than {MAX_SPEC_BYTES // 1024} KiB; a run spec is a small JSON file")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        refuse(f"spec file {source} is UTF-16 text", "save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        refuse(f"spec file {source} is not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}",
               "save it as UTF-8 (Latin-1 and other encodings are not read)")


def parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError([("", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")], source) from None
    except RecursionError:
        raise SpecError([("", "invalid spec: its JSON is nested too deeply")], source) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise SpecError([("", f"invalid JSON: {shorten(str(exc), 200)}")], source) from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.epochs=5' -> (['train', 'epochs'], 5); values are JSON, else strings."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ValueError(f"--set {shorten(item)!r}: write KEY=VALUE with a dotted key, e.g. --set train.epochs=5")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        value = raw
    return key.strip().split("."), value


# fields that may be written as a bare name, so --set can reach into them
SHORTHAND_FIELDS = ("backbone", "reader", "strategy", "optimizer", "scheduler")


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
            if isinstance(current, str) and key in SHORTHAND_FIELDS:
                current = {"name": current}  # let --set reach into the shorthand
            if current is None:
                current = {}
            if not isinstance(current, dict):
                problems.append((f"--set {shorten(item)}", f"cannot go inside {key!r}, which is not an object"))
                break
            target[key] = current
            target = current
        else:
            target[keys[-1]] = value
    if problems:
        raise SpecError(problems, source)
    return raw


def blame_overrides(problems: list[tuple[str, str]], overrides: list[str]) -> list[tuple[str, str]]:
    """A problem at a field that a --set wrote is shown as that override's, not the file's."""
    keys = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key:
            keys.append((key, item))
    out = []
    for loc, message in problems:
        for key, item in reversed(keys):  # the last --set of a key is the one that counts
            if loc == key or loc.startswith(key + ".") or key.startswith(loc + "."):
                loc = f"--set {shorten(item)}: {loc}"
                break
        out.append((loc, message))
    return out


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
    """Checks beyond one field's type: the augmentation list validates per op."""
    from tlzoo.data.transforms import validate_augment

    return [("data.augment" + loc, msg) for loc, msg in validate_augment(spec.data.augment)]


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


def resolve_spec(raw: Any, registry, base_dir: Path, source: str = "spec", overrides: list[str] = ()) -> Resolved:
    if not isinstance(raw, dict):
        raise SpecError([("", "the spec must be a JSON object")], source)
    try:
        spec = RunSpec.model_validate(raw)
    except ValidationError as exc:
        # still check the component names we can read, so all errors come at once
        problems = problems_from(exc, model=RunSpec) + _names_only(raw, registry)
        raise SpecError(_dedupe(blame_overrides(problems, list(overrides))), source) from None
    if spec.base_dir is not None:  # a run directory's spec.json: paths start where the original's did
        base_dir = Path(os.path.normpath(Path(base_dir) / Path(spec.base_dir).expanduser()))
    found, problems = resolve_components(spec, registry)
    problems += validate_extras(spec) + output_problems(spec.output, base_dir)
    if problems:
        raise SpecError(_dedupe(blame_overrides(problems, list(overrides))), source)
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


def _dedupe(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(problems))


def load_raw(path: str | Path, overrides: list[str] = ()) -> Any:
    """The spec file's JSON with the --set overrides applied."""
    source = str(path)
    raw = parse_json(read_spec_text(Path(path), source), source)
    if isinstance(raw, dict):
        raw = apply_overrides(raw, list(overrides), source)
    return raw


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
