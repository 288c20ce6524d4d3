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
from tlzoo.rundir.trust_store import read_trust
from tlzoo.data.batches import SourceSetup, eval_source
from tlzoo.engine.metrics import EvalResult, evaluate
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
    trust: object = None  # tlzoo.trust.record.Trust, or None: a model saved without one (an older run, `last`)

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
    tensors = load_state_file(weights_file)
    trust = read_trust(meta, tensors, run_dir / f"{which}.json")
    state = strip_training(tensors)  # `last` also holds optimizer and RNG state, `best` its trust tensors
    try:
        # assign: the file's tensors become the weights, no second copy of every tensor (time and peak memory)
        built.model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise TlzooError(f"{weights_file} does not fit the model its sidecar describes: {str(exc).splitlines()[0]}",
                         "the run directory is damaged or mixes files from different runs") from None
    target = resolve_device(device)
    built.model.to(target).eval()
    if target.type == "cpu":
        built.model.to(memory_format=torch.channels_last)
    if trust is not None and trust.scorer is not None:
        trust.scorer.to(target)
    return LoadedRun(run_dir, built.model, meta, classes, DataConfig.from_dict(meta["data_config"]), target,
                     trust=trust)


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
    """Metrics, per-image records (tlzoo.report.records.ImageRecord, calibrated probabilities) and the trust
    figures (calibration before/after, unknown share; None without trust data) from one pass over `items`."""
    from tlzoo.data.transforms import build_eval_transform
    from tlzoo.engine.pooled_pass import features_over
    from tlzoo.engine.metrics import summarize
    from tlzoo.engine.per_image import records_from_logits

    configure_threads()
    source = eval_source(SourceSetup(items, build_eval_transform(run.data_config), run.batch_size,
                                     resolve_workers(num_workers, len(items)), 0, shuffle=False,
                                     background=run.background))
    features, logits, labels = features_over(run.model, source, run.device, run.precision, fast=run.fast,
                                             log=log or note, tta=run.tta)
    temperature = run.trust.temperature if run.trust is not None else 1.0
    records = records_from_logits(items, logits / temperature, labels, run.classes)
    return summarize(logits, labels, len(run.classes)), records, trust_figures(run, features, logits, labels)


def trust_figures(run: LoadedRun, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> dict | None:
    """Calibration before/after on these images, and how many the unknown threshold keeps (they are known)."""
    from tlzoo.trust.record import evaluation_figures

    if run.trust is None or not len(labels):
        return None
    return evaluation_figures(run.trust.record, logits, labels,
                              run.trust.scores(features.to(run.device), logits.to(run.device)))


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
    top: list[tuple[str, float]]  # (class, probability), best first; calibrated when the run has a temperature
    error: str | None = None
    unknown: bool = False  # the out-of-distribution score is above the run's threshold (never without trust data)
    ood_score: float | None = None  # higher: less like the training images; None without trust data


NO_TRUST_NOTED: set[str] = set()  # run directories already said to have no trust data, once a process


def note_no_trust(run: LoadedRun, log) -> None:
    key = f"{run.run_dir}/{run.sidecar.get('kind', '')}"
    if key in NO_TRUST_NOTED:
        return
    NO_TRUST_NOTED.add(key)
    why = "only best carries them" if run.sidecar.get("kind") == "last" else \
        "a run made before tlzoo fitted them, stopped before its end, or with both switched off"
    log(f"{run.run_dir}: its {run.sidecar.get('kind', 'best')} model has no calibration or unknown threshold "
        f"({why}): probabilities are uncalibrated and no image is marked unknown")


def decide(run: LoadedRun, features: torch.Tensor, logits: torch.Tensor, reject: bool = True,
           keep: float | None = None) -> tuple[torch.Tensor, list[float | None], list[bool]]:
    """(probabilities, OOD scores, unknown flags) of a batch: calibrated and judged by the run's trust record."""
    trust = run.trust
    if trust is None:
        return logits.float().softmax(1), [None] * len(logits), [False] * len(logits)
    scores = trust.scores(features, logits)
    values = [None] * len(logits) if scores is None else [float(v) for v in scores.cpu().tolist()]
    flags = trust.unknown(scores, keep) if reject and scores is not None else [False] * len(logits)
    return trust.probabilities(logits), values, flags


def check_keep(keep: float | None) -> None:
    if keep is not None and not 0.0 < keep <= 1.0:
        raise TlzooError(f"--keep {keep}: give the share of known images to keep, above 0 and at most 1 "
                         "(0.95 keeps 95 %)")


class RunPredictor:
    """A run's predict path one batch at a time: `predict` below and `tlzoo serve` both run it.

    `prepare` turns an RGB image, decoded no smaller than `need`, into the
    model's input (the run's eval transform); `score` runs a batch of them
    through the fast path. The head and the OOD score run one image at a time: a
    matrix product picks its kernel by batch size, so a batched head would let an
    image's last digits depend on the images it shares a batch with (the folded
    stages are per-image already), and a server's batches differ from predict's.
    With the run's trust record the probabilities are calibrated and each image
    gets an OOD score; it is `unknown` above the threshold for `keep` (the run's
    own share when None) unless `reject` is False.
    """

    def __init__(self, run: LoadedRun, log=None, reject: bool = True, keep: float | None = None):
        from tlzoo.data.transforms import build_eval_transform
        from tlzoo.engine.pooled_pass import FeatureForward

        check_keep(keep)
        configure_threads()
        log = log or note
        if run.trust is None:
            note_no_trust(run, log)
        self.run, self.reject, self.keep = run, reject, keep
        self.classes = run.classes
        self.background = run.background
        self.batch_size = run.batch_size
        self.transform = build_eval_transform(run.data_config)
        self.need = self.transform.decode_need()
        self.forward = FeatureForward(run.model, 0, run.fast, run.precision, run.device, log, "prediction model",
                                      per_row=True)
        run.model.eval()

    def prepare(self, image) -> torch.Tensor:
        return self.transform(image)

    def score(self, rows: list[torch.Tensor], top_ks: list[int]) -> list[Prediction]:
        """One Prediction (path None) per row, each with its own number of top classes."""
        batch = torch.stack(rows)
        features, logits = self.forward(batch)
        if self.run.tta != "none":  # the views' averaged probabilities; the score reads the centre view's features
            logits = tta_logits(lambda x: self.forward(x)[1], batch, self.run.tta)
        probs, scores, flags = decide(self.run, features, logits, self.reject, self.keep)
        out = []
        for row, top_k, score, flag in zip(probs.cpu(), top_ks, scores, flags):
            values, indices = row.topk(max(1, min(top_k, len(self.classes))))
            out.append(Prediction(None, [(self.classes[i], v) for i, v in zip(indices.tolist(), values.tolist())],
                                  unknown=flag, ood_score=score))
        return out


@allocator_scope()  # configure_threads keeps freed buffers for the pass; a notebook gets glibc's defaults back
def predict(run: LoadedRun, paths: list, top_k: int = 5, log=None, reject: bool = True,
            keep: float | None = None) -> list[Prediction]:
    """Top-k classes of each image (a path or a PIL image), batched; unreadable ones come back with `error` set;
    calibrated and marked unknown as RunPredictor says."""
    return predict_with(RunPredictor(run, log, reject, keep), paths, top_k)


def predict_with(predictor, paths: list, top_k: int) -> list[Prediction]:
    """Decode, prepare and score `paths` (paths or PIL images) in batches of `predictor.batch_size`.

    `predictor` is a RunPredictor or an exported model (tlzoo.export.predicting): `classes`,
    `background`, `need` (how small an image may be decoded, tlzoo.data.decode_size), `batch_size`,
    `prepare(image)`, `score(rows, top_ks)`. Decoding runs ahead in threads (prepared_inputs).
    """
    from PIL import Image

    results: list[Prediction] = []
    pending: list[tuple[int, object]] = []

    def flush():
        scored = predictor.score([row for _, row in pending], [top_k] * len(pending))
        for (slot, _), prediction in zip(pending, scored):
            prediction.path = results[slot].path
            results[slot] = prediction
        pending.clear()

    inputs = prepared_inputs(paths, predictor.prepare, predictor.background, predictor.need,
                             ahead=2 * predictor.batch_size)
    for path, (row, error) in zip(paths, inputs):
        results.append(Prediction(None if isinstance(path, Image.Image) else path, [], error))
        if row is None:
            continue
        pending.append((len(results) - 1, row))
        if len(pending) == predictor.batch_size:
            flush()
    if pending:
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
