"""Reloading a finished run: rebuild the model from its sidecar, then evaluate or predict.

The model is rebuilt through the registry (the backbone with weights "none",
then the run's safetensors), never unpickled. Evaluation uses the same eval
transform, batch size and precision as the run, so it reproduces the run's
validation numbers.
"""

from __future__ import annotations

import itertools
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from tlzoo.model.backbone import DataConfig
from tlzoo.errors import TlzooError
from tlzoo.model.build import build_model
from tlzoo.spec import HeadSpec, ResolvedComponent
from tlzoo.rundir.training_state import strip_training
from tlzoo.model.weights import load_state_file
from tlzoo.rundir.sidecar import read_model_sidecar
from tlzoo.data.batches import SourceSetup, eval_source
from tlzoo.engine.metrics import EvalResult, evaluate, head_after
from tlzoo.engine.tta import tta_logits
from tlzoo.data.images import IMAGE_EXTENSIONS
from tlzoo.runtime.device import allocator_scope, available_cpus, configure_threads, resolve_device, resolve_workers

@dataclass
class LoadedRun:
    run_dir: Path
    model: torch.nn.Module
    sidecar: dict
    classes: list[str]
    data_config: DataConfig
    device: torch.device
    tta: str = "none"  # test-time augmentation of evaluate and predict (tlzoo.engine.tta)

    @property
    def precision(self) -> str:
        return self.sidecar["eval"]["precision"]

    @property
    def batch_size(self) -> int:
        return self.sidecar["eval"]["batch_size"]

    @property
    def fast(self) -> str:
        """'folded' when the run asked for precision auto on a CPU (tlzoo.runtime.fast_pass.fast_mode)."""
        from tlzoo.runtime.fast_pass import fast_mode

        return fast_mode(self.sidecar["eval"].get("precision_asked", self.precision), self.precision, self.device)

    @property
    def background(self) -> tuple[int, int, int]:
        return tuple(self.sidecar["eval"]["background"])


def backbone_component(registry, name: str, options: dict) -> ResolvedComponent:
    from pydantic import ValidationError

    from tlzoo.registry import UnknownComponent

    try:
        component = registry.component("backbones", name)  # runs only the plugins that may hold the name
    except UnknownComponent as exc:
        raise TlzooError(f"the run's backbone is not available here: {exc.args[0]}",
                         "install the plugin that provides it") from None
    try:
        return ResolvedComponent(component, component.options.model_validate(options))
    except ValidationError as exc:
        raise TlzooError(f"the run's backbone options no longer validate for {name}: {exc}",
                         "use the tlzoo and plugin versions the run was made with (see its sidecar)") from None


def load_run(run_dir: Path, registry, which: str = "best", device: str = "cpu") -> LoadedRun:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TlzooError(f"run directory {run_dir} does not exist", "pass the folder that `tlzoo run` printed")
    weights_file = run_dir / f"{which}.safetensors"
    meta = read_model_sidecar(run_dir, which)  # validated, and the same as the copy inside the weights file
    classes = list(meta["classes"])
    backbone = backbone_component(registry, meta["backbone"]["name"], meta["backbone"]["options"])
    built = build_model(backbone, "none", HeadSpec.model_validate(meta["head"]), len(classes))
    state = strip_training(load_state_file(weights_file))  # `last` also holds optimizer and RNG state
    try:
        built.model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise TlzooError(f"{weights_file} does not fit the model its sidecar describes: {str(exc).splitlines()[0]}",
                         "the run directory is damaged or mixes files from different runs") from None
    target = resolve_device(device)
    built.model.to(target).eval()
    if target.type == "cpu":
        built.model.to(memory_format=torch.channels_last)
    return LoadedRun(run_dir, built.model, meta, classes, DataConfig.from_dict(meta["data_config"]), target)


def note(line: str) -> None:
    """Notes go to stderr: stdout carries the predictions and metrics."""
    print(f"tlzoo: {line}", file=sys.stderr)


@allocator_scope()  # configure_threads keeps freed buffers for the pass; a notebook gets glibc's defaults back
def evaluate_items(run: LoadedRun, items: list[tuple[Path, int]], num_workers="auto", log=None) -> EvalResult:
    from tlzoo.data.transforms import build_eval_transform

    configure_threads()
    source = eval_source(SourceSetup(items, build_eval_transform(run.data_config), run.batch_size,
                                     resolve_workers(num_workers, len(items)), 0, shuffle=False,
                                     background=run.background))
    return evaluate(run.model, source, len(run.classes), run.device, run.precision, fast=run.fast,
                    log=log or note, tta=run.tta)


@allocator_scope()
def evaluate_records(run: LoadedRun, items: list[tuple[Path, int]], num_workers="auto", log=None):
    """Metrics and per-image records (tlzoo.report.records.ImageRecord) from one pass over `items`."""
    from tlzoo.data.transforms import build_eval_transform
    from tlzoo.engine.metrics import logits_over, summarize
    from tlzoo.engine.per_image import records_from_logits

    configure_threads()
    source = eval_source(SourceSetup(items, build_eval_transform(run.data_config), run.batch_size,
                                     resolve_workers(num_workers, len(items)), 0, shuffle=False,
                                     background=run.background))
    logits, labels = logits_over(run.model, source, run.device, run.precision, fast=run.fast, log=log or note,
                                 tta=run.tta)
    return summarize(logits, labels, len(run.classes)), records_from_logits(items, logits, labels, run.classes)


def collect_images(paths: list[Path]) -> list[Path]:
    """Files as given, missing ones too; folders searched recursively for image names (hidden ones skipped).

    Nothing is dropped silently: a missing path, or a FIFO, socket or broken symlink with an image
    suffix, is passed on so that predict reports it (load_rgb never opens what is not a regular file).
    """
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir()
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            found.append(path)
    return found


@dataclass
class Prediction:
    path: Path | None  # None for an image passed in memory (a PIL image)
    top: list[tuple[str, float]]  # (class, probability), best first
    error: str | None = None


@allocator_scope()
def predict(run: LoadedRun, paths: list, top_k: int = 5, log=None) -> list[Prediction]:
    """Top-k classes of each image (a path or a PIL image), batched; unreadable ones come back with `error` set."""
    from PIL import Image

    from tlzoo.runtime.fast_pass import InferencePath, Stages
    from tlzoo.data.transforms import build_eval_transform

    configure_threads()
    transform = build_eval_transform(run.data_config)
    forward = head_after(run.model, InferencePath(Stages(run.model), run.fast, run.precision, run.device,
                                                  log or note, "prediction model"))
    k = max(1, min(top_k, len(run.classes)))
    results: list[Prediction] = []
    pending: list[tuple[int, torch.Tensor]] = []

    def flush():
        if not pending:
            return
        probs = tta_logits(forward, torch.stack([tensor for _, tensor in pending]), run.tta).softmax(1).cpu()
        values, indices = probs.topk(k, dim=1)
        for (slot, _), vals, idxs in zip(pending, values.tolist(), indices.tolist()):
            results[slot].top = [(run.classes[i], v) for i, v in zip(idxs, vals)]
        pending.clear()

    run.model.eval()
    inputs = prepared_inputs(paths, transform, run.background, transform.decode_need(), ahead=2 * run.batch_size)
    for path, (tensor, error) in zip(paths, inputs):
        results.append(Prediction(None if isinstance(path, Image.Image) else path, [], error))
        if tensor is None:
            continue
        pending.append((len(results) - 1, tensor))
        if len(pending) == run.batch_size:
            flush()
    flush()
    return results


def prepared_inputs(items: list, transform, background, need=None, ahead: int = 64):
    """(transformed tensor, None) or (None, why not) for each item (a path or a PIL image), in order.

    Each image is decoded no larger than `need` (tlzoo.data.decode_size) and an image in memory meets the
    caps a file does (50:1 aspect, 64 Mpx) from its size alone. Decoding runs in threads up to `ahead` items
    before the consumer (Pillow releases the GIL while it decodes), so the model's pass over one batch and
    the decoding of the next overlap.
    """
    from PIL import Image

    from tlzoo.data.images import load_rgb, rgb_from_memory

    def prepare(numbered):
        number, item = numbered
        try:
            image = (rgb_from_memory(item, background, f"image {number}", need) if isinstance(item, Image.Image)
                     else load_rgb(item, background, need))
            return transform(image), None
        except (TlzooError, OSError, ValueError) as exc:
            # the reason alone: the caller names the input, and BadImage's hint is about data.bad_files, for runs
            return None, getattr(exc, "reason", None) or getattr(exc, "message", None) or str(exc)

    numbered = iter(enumerate(items))
    workers = min(4, available_cpus(), len(items))
    if workers < 2:
        yield from map(prepare, numbered)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tlzoo-decode") as pool:
        window = deque(pool.submit(prepare, pair) for pair in itertools.islice(numbered, max(1, ahead)))
        while window:
            done = window.popleft().result()
            following = next(numbered, None)
            if following is not None:
                window.append(pool.submit(prepare, following))
            yield done
