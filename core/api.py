"""The Python API: what `import tlzoo` offers a notebook user (see README.md, "Python API").

    result = tlzoo.train("photos/", time="10m")   # no spec: chosen by measurement (decisions.json)
    result = tlzoo.run("spec.json", overrides={"train.epochs": 3})
    model = tlzoo.load(result.run_dir)
    model.predict(["photo.jpg"], top_k=3)
    model.evaluate("test_folder")          # or None: the run's own validation split
    tlzoo.list_backbones("timm/resnet*", pretrained=True)

Each function is a thin face over what the CLI runs (load_spec/resolve_spec,
run_spec, load_run, predict, evaluate_run, the backbone listing), so the two
never disagree. Errors are TlzooError (the CLI prints the same ones as
`tlzoo: error: ...`); nothing here exits the interpreter. torch is imported
inside the functions only: tlzoo/__init__.py re-exports them lazily.
"""

from __future__ import annotations

import copy
import importlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlzoo.errors import TlzooError

# files that helper modules of tlzoo.export write; load() hands them there
EXPORTED_SUFFIXES = (".onnx", ".pt2")


@contextmanager
def user_errors():
    """Registry errors (unknown or duplicate names, strict plugin failures) reach the user as TlzooError."""
    from tlzoo.registry import DuplicateComponent, PluginError, UnknownComponent

    try:
        yield
    except (UnknownComponent, DuplicateComponent) as exc:
        raise TlzooError(exc.args[0]) from None
    except PluginError as exc:
        raise TlzooError(str(exc)) from None


PATH_TYPES = (str, Path)


def expect(function: str, argument: str, value, types: tuple, wanted: str, optional: bool = False) -> None:
    """A TlzooError naming the argument, instead of the TypeError a wrong type would raise somewhere deeper."""
    if (optional and value is None) or (isinstance(value, types) and not (isinstance(value, bool) and bool not in types)):
        return
    raise TlzooError(f"{function}(): {argument} must be {wanted}, not {type(value).__name__} ({value!r:.60})")


def listed(images, wanted: str) -> list:
    """predict()'s `images` as a list: one item, or an iterable of them."""
    try:
        return list(images)
    except TypeError:
        raise TlzooError(f"predict() takes {wanted} (one, or a list of them), not {type(images).__name__}") from None


def check_predict_options(top_k, reject, keep) -> None:
    """predict()'s options, named as Python writes them (the engine's own checks speak of --keep)."""
    expect("predict", "top_k", top_k, (int,), "an integer")
    if top_k < 1:
        raise TlzooError(f"top_k={top_k}: ask for at least one class")
    expect("predict", "reject", reject, (bool,), "True or False")
    expect("predict", "keep", keep, (int, float), "a share such as 0.95, or None", optional=True)
    if keep is not None and not 0.0 < keep <= 1.0:
        raise TlzooError(f"keep={keep!r}: give the share of known images to keep, above 0 and at most 1 "
                         "(0.95 keeps 95 %)")


def _registry():
    from tlzoo.registry import get_registry

    return get_registry()


def override_strings(overrides) -> list[str]:
    """--set strings as given, or {"train.epochs": 3} turned into them (values as JSON)."""
    import json

    if overrides is None:
        return []
    if isinstance(overrides, dict):
        if not all(isinstance(key, str) for key in overrides):
            raise TlzooError("tlzoo.run(): the keys of overrides must be dotted field names such as 'train.epochs'")
        def path_as_text(value):  # {"data.reader.options.root": Path(...)} is what a notebook writes
            if isinstance(value, os.PathLike):
                return os.fspath(value)
            raise TypeError(f"{type(value).__name__} is not JSON")

        try:
            return [f"{key}={json.dumps(value, default=path_as_text)}" for key, value in overrides.items()]
        except (TypeError, ValueError) as exc:
            raise TlzooError(f"tlzoo.run(): an override value is not JSON: {exc}",
                             "give numbers, strings, booleans, paths, lists or dicts") from None
    if isinstance(overrides, str):
        return [overrides]
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(item, str) for item in overrides):
        raise TlzooError(f"tlzoo.run(): overrides must be a dict of dotted keys or a list of 'KEY=VALUE' strings, "
                         f"not {type(overrides).__name__}")
    return list(overrides)


def resolve(spec_or_path, overrides=None, base_dir: str | Path | None = None):
    """A resolved spec from a spec file's path, a dict, or a RunSpec; every problem raised at once as SpecError."""
    from pydantic import BaseModel

    from tlzoo.spec import apply_overrides, load_spec, resolve_spec

    settings = override_strings(overrides)
    if isinstance(spec_or_path, (str, Path)):
        return load_spec(spec_or_path, _registry(), settings)
    if isinstance(spec_or_path, BaseModel):
        spec_or_path = spec_or_path.model_dump(mode="json")
    if not isinstance(spec_or_path, dict):
        raise TlzooError(f"tlzoo.run() takes a spec file path, a dict or a RunSpec, not {type(spec_or_path).__name__}")
    raw = apply_overrides(copy.deepcopy(spec_or_path), settings, "spec")
    # relative paths in a dict spec are relative to base_dir, else to the working directory
    return resolve_spec(raw, _registry(), Path(base_dir or Path.cwd()).resolve(), "spec")


@dataclass
class RunResult:
    """A finished run: its directory and summary.json's contents."""

    run_dir: Path
    summary: dict

    @property
    def best(self) -> dict:
        """The metrics of the best epoch (val_top1, val_loss, val_top5, ...); empty when no epoch was finite."""
        return self.summary.get("best") or {}

    @property
    def best_epoch(self) -> int | None:
        return self.summary.get("best_epoch")

    def load(self, which: str = "best", device: str = "cpu") -> "Model":
        return load(self.run_dir, which=which, device=device)

    @property
    def decisions(self) -> dict | None:
        """decisions.json of a run that `tlzoo.train` chose (candidates, scores, costs, reasons); None otherwise."""
        import json

        path = self.run_dir / "decisions.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run(spec_or_path, overrides=None, output: str | Path | None = None, *, resume: str | Path | None = None,
        base_dir: str | Path | None = None) -> RunResult:
    """Train as the spec says, exactly like `tlzoo run`; returns the run directory, summary and best metrics.

    `overrides`: --set strings (["train.epochs=5"]) or a dict of dotted keys ({"train.epochs": 5}).
    `output`: the run directory (default: <spec output>/<spec name>[-N]). `resume`: a run directory to continue.
    """
    from tlzoo.engine.run import run_spec

    for argument, value in (("output", output), ("resume", resume), ("base_dir", base_dir)):
        expect("tlzoo.run", argument, value, PATH_TYPES, "a path (str or pathlib.Path)", optional=True)
    if resume is not None and output is not None:
        raise TlzooError("resume and output both name a run directory", "pass only resume=RUN_DIR")
    with user_errors():
        resolved = resolve(spec_or_path, overrides, base_dir)
        result = run_spec(resolved, Path(output) if output is not None else None,
                          resume=Path(resume) if resume is not None else None)
    return RunResult(Path(result.run_dir), result.summary)


def train(data: str | Path, time: str | float = "10m", *, backbones=None, offline: bool = False,
          test: str | Path | None = None, output: str | Path | None = None, seed: int = 0) -> RunResult:
    """The best model the time budget finds on `data`, as `tlzoo train` does; returns a RunResult like run().

    `data`: a folder with train/ (val/, test/) of class folders, one folder of class folders, a 'PATH LABEL'
    .txt list or a CSV. `time`: '10m', '90s', or seconds, counted from this call. `backbones`: patterns
    (default: the backbones whose weights are on this machine). The run directory's decisions.json
    (`result.decisions`) says what was tried and why.
    """
    from tlzoo.auto.budget import parse_duration
    from tlzoo.auto.train import train as train_auto
    from tlzoo.cli.train import default_candidates

    with user_errors():
        patterns = [backbones] if isinstance(backbones, str) else backbones or []
        expect("tlzoo.train", "backbones", patterns, (list, tuple), "a pattern or a list of patterns")
        for pattern in patterns:
            expect("tlzoo.train", "backbones", pattern, (str,), "a pattern or a list of patterns ('timm/resnet*')")
        expect("tlzoo.train", "data", data, PATH_TYPES, "a path")
        for argument, value in (("test", test), ("output", output)):
            expect("tlzoo.train", argument, value, PATH_TYPES, "a path or None", optional=True)
        expect("tlzoo.train", "seed", seed, (int,), "an integer")
        expect("tlzoo.train", "offline", offline, (bool,), "True or False")
        seconds = parse_duration(time, "time")  # errors name time=..., not the CLI's --time
        result = train_auto(data, seconds, default_candidates(patterns), offline, test, output, seed, _registry())
    return RunResult(Path(result.run_dir), result.summary)


class Model:
    """A trained model reloaded from a run directory, as `tlzoo evaluate` and `tlzoo predict` use it."""

    def __init__(self, loaded):
        self._loaded = loaded  # tlzoo.engine.inference.LoadedRun

    @property
    def classes(self) -> list[str]:
        return list(self._loaded.classes)

    @property
    def data_config(self):
        """Input size, mean, std, interpolation and crop of the evaluation transform (a DataConfig)."""
        return self._loaded.data_config

    @property
    def run_dir(self) -> Path:
        return self._loaded.run_dir

    @property
    def module(self):
        """The torch module (eval mode): the backbone's stages and the new head."""
        return self._loaded.model

    def predict(self, images, top_k: int = 5, reject: bool = True, keep: float | None = None) -> list:
        """Top-k (class, probability) of each image, in input order.

        `images`: a path, a PIL image, a folder (searched for image files) or a list of these.
        Returns tlzoo.engine.inference.Prediction objects (.path, .top, .error, .unknown, .ood_score);
        an image that cannot be read has `error` set instead of failing the others. Probabilities are
        calibrated; `unknown` is True when `ood_score` is above the run's threshold (`keep`: the
        threshold that keeps that share of the validation images instead; `reject=False`: never).
        """
        from PIL import Image

        from tlzoo.engine.inference import collect_images, predict

        check_predict_options(top_k, reject, keep)
        items = [images] if isinstance(images, (str, Path, Image.Image)) else listed(images, "paths or PIL images")
        expanded = []
        for item in items:
            if isinstance(item, Image.Image):
                expanded.append(item)
            elif isinstance(item, (str, Path)):
                expanded += collect_images([Path(item)])
            else:
                raise TlzooError(f"predict() takes paths or PIL images, not {type(item).__name__}")
        if not expanded:
            raise TlzooError(f"no image files found in {images}", "pass image files, folders of them or PIL images")
        return predict(self._loaded, expanded, top_k, reject=reject, keep=keep)

    def evaluate(self, data: str | Path | None = None) -> dict:
        """Top-1, top-5, loss, per-class accuracy and confusion matrix, as `tlzoo evaluate --json` prints them.

        `data`: a folder with one sub-folder per class (named as in the run); None: the run's validation split.
        """
        from tlzoo.engine.evaluation import evaluate_run

        expect("evaluate", "data", data, PATH_TYPES, "a folder path (str or pathlib.Path) or None", optional=True)
        with user_errors():
            _, report = evaluate_run(self._loaded, _registry(), None if data is None else Path(data), "data")
        return report

    def __repr__(self) -> str:
        return f"tlzoo.Model({str(self.run_dir)!r}, {len(self.classes)} classes)"


def load(path: str | Path, which: str = "best", device: str = "cpu"):
    """A trained model from a run directory (its `best` or `last`), or from an exported .onnx / .pt2 file."""
    from tlzoo.engine.inference import load_run
    from tlzoo.runtime.device import resolve_device

    expect("tlzoo.load", "path", path, PATH_TYPES, "a run directory or exported file (str or pathlib.Path)")
    expect("tlzoo.load", "which", which, (str,), "'best' or 'last'")
    expect("tlzoo.load", "device", device, (str,), "a device name such as 'cpu' or 'cuda'")
    path = Path(path)
    if path.suffix.lower() in EXPORTED_SUFFIXES and not path.is_dir():
        return load_exported(path, device)
    if which not in ("best", "last"):
        raise TlzooError(f"which={which!r}: choose 'best' or 'last'")
    with user_errors():
        resolve_device(device, "device")  # named as the argument, before the run is read
        return Model(load_run(path, _registry(), which, device))


class ExportedModel:
    """A model file written by `tlzoo export` (.onnx, .pt2), read by tlzoo.export.predicting."""

    def __init__(self, exported, predicting):
        self._exported, self._predicting = exported, predicting

    @property
    def classes(self) -> list[str]:
        return list(self._exported.classes)

    @property
    def data_config(self):
        return importlib.import_module("tlzoo.export.metadata").data_config_of(self._exported.metadata)

    def predict(self, images, top_k: int = 5, reject: bool = True, keep: float | None = None) -> list:
        """Like Model.predict, for image files and folders (the file carries its own preprocessing, temperature
        and unknown threshold)."""
        from tlzoo.engine.inference import collect_images

        check_predict_options(top_k, reject, keep)
        items = [images] if isinstance(images, (str, Path)) else listed(images, "paths of image files or folders")
        if not all(isinstance(item, (str, Path)) for item in items):
            raise TlzooError("an exported model predicts from image files and folders",
                             "save the image to a file, or load the run directory to pass PIL images")
        paths = collect_images([Path(item) for item in items])
        if not paths:
            raise TlzooError(f"no image files found in {images}", "pass image files or folders of them")
        return self._predicting.predict_exported(self._exported, paths, top_k, reject=reject, keep=keep)

    def evaluate(self, data: str | Path | None = None) -> dict:
        """As Model.evaluate: `data`, a folder of class folders; None: the validation split of the run
        directory the file sits in."""
        expect("evaluate", "data", data, PATH_TYPES, "a folder path (str or pathlib.Path) or None", optional=True)
        evaluating = importlib.import_module("tlzoo.export.evaluating")
        with user_errors():
            _, report = evaluating.evaluate_exported(self._exported, _registry(), None if data is None else Path(data),
                                                     "data")
        return report


def load_exported(path: Path, device: str):
    """The seam to tlzoo.export: its predicting module reads the file; ExportedModel gives it Model's face."""
    if device != "cpu":
        raise TlzooError(f"device={device!r}: exported models run on the CPU here", "leave device out")
    try:
        predicting = importlib.import_module("tlzoo.export.predicting")
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("tlzoo.export"):
            raise
        raise TlzooError(f"{path} is an exported model, and this tlzoo cannot load exported models",
                         "load the run directory it was exported from: tlzoo.load(RUN_DIR)") from None
    with user_errors():
        return ExportedModel(predicting.load_exported(path), predicting)


def list_backbones(pattern: str | None = None, pretrained: bool = False, offline: bool = False) -> list[dict[str, Any]]:
    """Backbones as `tlzoo list backbones` shows them: dicts with name, plugin, weights, input, and params
    (the parameter count) where the plugin states it without building the model (torchvision's do).

    `pattern`: a shell-style pattern ('timm/resnet*'); `pretrained`: only those with pretrained weights;
    `offline`: only those whose weights are on this machine (shipped or cached).
    """
    from tlzoo.cli.listing import matching_backbones

    expect("tlzoo.list_backbones", "pattern", pattern, (str,), "a shell-style pattern such as 'timm/resnet*'",
           optional=True)
    expect("tlzoo.list_backbones", "pretrained", pretrained, (bool,), "True or False")
    expect("tlzoo.list_backbones", "offline", offline, (bool,), "True or False")
    with user_errors():
        return matching_backbones(pattern, pretrained=pretrained, offline=offline)
