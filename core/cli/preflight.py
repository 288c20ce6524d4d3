"""`tlzoo validate`: everything `tlzoo run` would refuse before training, reported at once.

Beyond the spec's own validation this runs the dataset reader (which lists the
files and reads txt/csv lists, but decodes no image: scanning a big set is the
run's job), applies data.bad_files and the bad-input limits to the lines it
could not read, maps the classes, checks the weights with the backbone's own
check when it offers one (`Component.extra["check_weights"]`: an unknown
variant, no pretrained weights, hub weights neither cached nor downloadable),
loads a weights file into the backbone (it must fit its tensors) and checks
the device. Relative paths start from the spec's `base_dir` when it has one,
as in `run`. Each part runs on the raw spec, so a problem in one field never
hides the problems of another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from tlzoo.errors import SpecError, TlzooError
from tlzoo.registry.catalog import closest
from tlzoo.spec import (BackboneSpec, ComponentRef, DataSpec, Resolved, WeightsFile, blame_overrides, default_name,
                        load_raw, resolve_spec, shorten, spec_base_dir)

Problems = list[tuple[str, str]]
PLAIN_WEIGHTS = ("pretrained", "none")


def validate_everything(path: Path, registry, overrides: list[str] = (), notes: list[str] | None = None) -> Resolved:
    """The resolved spec, or one SpecError with every problem that would stop `tlzoo run` before training.

    `notes` receives what `run` would do without stopping (list lines it would skip)."""
    source = str(path)
    raw = load_raw(path, overrides)
    spec_folder = Path(path).resolve().parent
    base_dir = spec_base_dir(spec_folder, raw.get("base_dir") if isinstance(raw, dict) else None)
    problems: Problems = []
    resolved = None
    try:
        resolved = resolve_spec(raw, registry, spec_folder, source, overrides)
    except SpecError as exc:
        problems += exc.problems
    late = blame_overrides(preflight_problems(raw, registry, base_dir, notes), list(overrides))
    problems += [problem for problem in late if problem not in problems]
    if problems:
        raise SpecError(problems, source)
    if resolved.spec.name is None:
        resolved.spec.name = default_name(Path(path))
    return resolved


def preflight_problems(raw: Any, registry, base_dir: Path, notes: list[str] | None = None) -> Problems:
    if not isinstance(raw, dict):
        return []
    problems: Problems = []
    for check in (_reader_problems, _weights_problems, _device_problems):
        problems += check(raw, registry, base_dir, [] if notes is None else notes)
    return problems


def _section(raw: dict, *keys: str) -> Any:
    for key in keys:
        raw = raw.get(key) if isinstance(raw, dict) else None
    return raw


def _component(raw_ref: Any, registry, kind: str, model=ComponentRef):
    """(component, validated options) for a raw component reference, or None when the spec's own
    validation already reports what is wrong with it."""
    try:
        ref = model.model_validate(raw_ref)
        component = registry.catalog(kind).get_component(ref.name)
        return component, component.options.model_validate(ref.options)
    except (ValidationError, LookupError):
        return None


def _reader_problems(raw: dict, registry, base_dir: Path, notes: list[str]) -> Problems:
    from tlzoo.data.bad_files import check_bad_files
    from tlzoo.data.class_mapping import map_splits
    from tlzoo.data.samples import ReaderOutput

    found = _component(_section(raw, "data", "reader"), registry, "readers")
    if found is None:
        return []
    component, options = found
    try:
        output = component.build(options, base_dir)
    except TlzooError as exc:
        return [located("data.reader", str(exc))]
    if not isinstance(output, ReaderOutput):
        return []  # `run` says what is wrong with the plugin
    problems: Problems = []
    if output.problems:  # lines the reader could not use count as bad inputs, as in `run`
        bad_files, max_fraction, tolerated = _bad_input_policy(raw)
        total = len(output.train) + len(output.val) + len(output.test or []) + len(output.problems)
        try:
            check_bad_files(output.problems, total, bad_files, max_fraction, tolerated)
            notes.append(f"{len(output.problems)} list line(s) will be skipped (data.bad_files 'skip'): "
                         + "; ".join(f"{p.origin}: {p.reason}" for p in output.problems[:5])
                         + (" ..." if len(output.problems) > 5 else ""))
        except TlzooError as exc:
            problems.append(located("data", str(exc)))
    try:
        map_splits(output)
    except TlzooError as exc:
        problems.append(located("data.reader", str(exc)))
    return problems


def _bad_input_policy(raw: dict) -> tuple[str, float, int]:
    """data.bad_files, max_bad_fraction and tolerated_bad_files as `run` applies them (a value that does not
    validate keeps its default: the spec's own validation reports it)."""
    data = _section(raw, "data")
    values = []
    for name in ("bad_files", "max_bad_fraction", "tolerated_bad_files"):
        value = DataSpec.model_fields[name].default
        if isinstance(data, dict) and name in data:
            try:
                value = getattr(DataSpec.model_validate({"reader": {"name": "any"}, name: data[name]}), name)
            except ValidationError:
                pass
        values.append(value)
    return values[0], values[1], values[2]


def located(loc: str, message: str) -> tuple[str, str]:
    """A plugin's message as a problem: its own 'data.reader.options.root: ...' prefix becomes the location,
    and its HINT line is indented under it."""
    head, sep, rest = message.partition(": ")
    if sep and head.startswith(loc) and " " not in head:
        loc, message = head, rest
    return loc, message.replace("\n", "\n  ")


def _weights_problems(raw: dict, registry, base_dir: Path, notes: list[str]) -> Problems:
    backbone = raw.get("backbone", {"name": "efficientnet_lite0"})
    weights = backbone.get("weights", "pretrained") if isinstance(backbone, dict) else "pretrained"
    if isinstance(weights, dict):
        return _weights_file_problems(backbone, weights, registry, base_dir)
    if not isinstance(weights, str) or weights == "none":
        return []
    found = _component(backbone, registry, "backbones", BackboneSpec)
    close = closest(weights, list(PLAIN_WEIGHTS), cutoff=0.75) if weights != "pretrained" else []
    typo = f" Did you mean: {close[0]}?" if close else ""  # 'pretrianed' is a typo, not a variant
    check: Callable | None = found[0].extra.get("check_weights") if found else None
    if check is None:
        if typo:
            return [("backbone.weights", f"{shorten(weights)!r} is not a weights name.{typo} "
                                         "Use 'pretrained', 'none', a named variant or {\"path\": ...}")]
        return []
    try:
        check(found[1], weights)
    except TlzooError as exc:
        message = exc.message + ("." + typo if typo else "") + (f"\n  HINT: {exc.hint}" if exc.hint else "")
        return [located("backbone.weights", message)]
    return []


def _weights_file_problems(backbone: dict, weights: dict, registry, base_dir: Path) -> Problems:
    """The file must exist and fit the backbone's tensors: the backbone is built (no weights) and the file loaded."""
    from tlzoo.model.build import build_model
    from tlzoo.spec import HeadSpec, ResolvedComponent

    try:
        path = Path(WeightsFile.model_validate(weights).path).expanduser()
    except ValidationError:
        return []
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        return [("backbone.weights.path", f"weights file {path} {what}")]
    found = _component(backbone, registry, "backbones", BackboneSpec)
    if found is None:
        return []
    try:
        build_model(ResolvedComponent(*found), WeightsFile(path=str(path)), HeadSpec(), 2, base_dir)
    except TlzooError as exc:
        return [located("backbone.weights.path", str(exc))]
    return []


def _device_problems(raw: dict, registry, base_dir: Path, notes: list[str]) -> Problems:
    from tlzoo.runtime.device import resolve_device
    from tlzoo.spec import TrainSpec

    device = _section(raw, "train", "device")
    if not isinstance(device, str):
        return []
    try:
        TrainSpec.model_validate({"device": device})
        resolve_device(device)
    except (ValidationError, TlzooError) as exc:
        return [] if isinstance(exc, ValidationError) else [("train.device", exc.message)]
    return []
