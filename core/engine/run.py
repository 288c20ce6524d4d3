"""`tlzoo run`: from a resolved spec to a finished run directory.

Wires the parts together: data through the reader contract, the model through
build_model, the freeze strategy, optimizer and schedule, the batch sources,
the loop, and the outputs (spec.json, metrics.jsonl, best/last, summary.json).
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tlzoo.model.backbone import count_parameters
from tlzoo.cache import attach_caches, run_cache_scope
from tlzoo.data.decoded_once import keeping_decoded
from tlzoo.runtime.precision import precision_note, resolve_precision
from tlzoo.rundir import outputs
from tlzoo.rundir.lock import writer_lock
from tlzoo.rundir.sidecar import MODEL_FORMAT
from tlzoo.data.batches import seed_everything
from tlzoo.data.class_balance import class_weights
from tlzoo.engine.loop import LoopConfig, Trainer
from tlzoo.engine.setup import ModelSetup, batch_sources, eval_batch_size, model_setup
from tlzoo.engine.metrics import per_class_accuracy
from tlzoo.engine.optim import Schedule, base_learning_rates, build_optimizer, layer_decay_factors
from tlzoo.engine.progress import make_progress
from tlzoo.engine.held_out import score_test
from tlzoo.engine.head_first import fit_head_first
from tlzoo.engine.trust_fit import fit_trust
from tlzoo.runtime.device import allocator_scope, configure_threads, keep_freed_memory, resolve_device, resolve_workers
from tlzoo.engine.state import TrainState
from tlzoo.engine.loggers import build_loggers
from tlzoo.engine.reporting import REPORT_FILE, report_after_run
from tlzoo.engine.extras import RunExtras
from tlzoo.report.per_class import per_class_metrics
from tlzoo.runtime import distributed
from tlzoo.errors import TlzooError

RANDOM_FEATURES_WARNING = (
    "warning: strategy head_only with backbone.weights 'none' trains only a new head on a frozen, random "
    "backbone: expect accuracy near chance\n  HINT: use weights 'pretrained' (or a weights file), or a strategy "
    "that trains the backbone such as 'none'")


@dataclass
class RunResult:
    run_dir: Path
    summary: dict


@dataclass
class RunSetup(ModelSetup):
    """What was built before the first epoch; kept together for checkpoints and resume."""

    run_dir: Path
    eval_batch_size: int
    loggers: object  # tlzoo.engine.loggers.Loggers, built for this run directory


def choose_run_dir(resolved, output: Path | None, claimed: list, writers: contextlib.ExitStack | None = None) -> Path:
    """A new run directory, noted in `claimed` so that a run failing before its first checkpoint removes it;
    held in `writers` (tlzoo.rundir.lock) first, so that a second run claiming it at once is refused untouched."""
    existed = output is not None and Path(output).is_dir()
    if output is not None:
        run_dir = outputs.claim_run_dir(Path(output))
    else:
        run_dir = outputs.new_run_dir(resolved.path(resolved.spec.output), resolved.spec.name or "run")
    if writers is not None:
        writers.enter_context(writer_lock(run_dir))
    claimed.append((run_dir, not existed))
    return run_dir


def trains_whole_backbone(plans) -> bool:
    """True when some epoch of the plan backpropagates down to the stem (then freed buffers are not kept)."""
    return any(plan.first_trainable == 0 for plan in plans)


def sidecar(setup: RunSetup, kind: str, record: dict) -> dict:
    spec = setup.resolved.spec
    return {
        "format": MODEL_FORMAT,
        "kind": kind,
        "classes": setup.data.classes,
        "backbone": {"name": setup.resolved.backbone.name, "options": setup.spec_json["backbone"]["options"],
                     "weights": setup.spec_json["backbone"]["weights"]},
        "weights_source": setup.built.weights,
        "head": spec.head.model_dump(mode="json"),
        "data_config": setup.built.data_config.to_dict(),
        "eval": {"batch_size": setup.eval_batch_size, "precision": setup.precision,
                 "precision_asked": spec.train.precision, "background": list(spec.data.background)},
        "spec_hash": outputs.spec_hash(setup.spec_json),
        "spec_dir": str(setup.resolved.base_dir),
        "versions": outputs.package_versions(),
        "epoch": record["epoch"],
        "metrics": record,
    }


def prepare(resolved, output: Path | None, log, resumed=None, claimed: list | None = None,
            writers: contextlib.ExitStack | None = None, extras: RunExtras | None = None) -> RunSetup:
    from tlzoo.data.labelled import load_labelled
    from tlzoo.data.skipped import write_skipped
    spec = resolved.spec
    extras = extras or RunExtras()
    seed_everything(spec.train.seed)  # the new head's initial weights
    device = distributed.local_device(resolve_device(spec.train.device))
    precision = resolve_precision(spec.train.precision, device)
    if precision_note(spec.train.precision, precision, device):
        log(precision_note(spec.train.precision, precision, device))
    if spec.train.refit and distributed.active():
        raise TlzooError("train.refit trains again in one process after training, and this is a torchrun job",
                         "set train.refit to false, or run the spec without torchrun")
    data = extras.data if extras.data is not None else load_labelled(resolved)
    for note in data.notes:
        log(f"data: {note}")
    distributed.assert_same_everywhere(
        [data.classes, *([(str(path), label) for path, label in split or []] for split in (data.train, data.val, data.test))],
        "the data (classes, or the list of images of a split)",
        "every process must read the same files: put the data on a folder every machine sees at the same path")
    model = model_setup(resolved, data, log, device)
    built, spec_json = model.built, model.spec_json
    if resumed is None:
        run_dir = None
        if distributed.is_main():  # under torchrun rank 0 alone writes the run directory; the others learn its name
            run_dir = choose_run_dir(resolved, output, [] if claimed is None else claimed, writers)
            outputs.write_json(run_dir / outputs.SPEC_FILE, spec_json)
            extras.write(run_dir)
        run_dir = Path(distributed.broadcast_object(str(run_dir)))
    else:  # the run's record stays as it was; resumes.jsonl notes what changed
        run_dir = resumed.accept(data.classes)
    if distributed.is_main():
        write_skipped(data.skipped, run_dir / outputs.SKIPPED_FILE)
    log(f"run directory: {run_dir}")
    log(f"data: {len(data.train)} training and {len(data.val)} validation images"
        + (f" ({len(data.test)} held-out test images)" if data.test is not None else "")
        + f" in {len(data.classes)} classes"
        + (f"; {len(data.skipped)} file(s) skipped, listed in {run_dir / outputs.SKIPPED_FILE}" if data.skipped else ""))
    log(f"model: {resolved.backbone.name} (weights: {built.weights}), {built.model.num_groups} parameter groups, "
        f"{count_parameters(built.model):,} parameters")
    for line in built.report.lines():
        log(f"weights: {line}")
    if spec.train.strategy.name == "head_only" and built.weights == "none":
        log(RANDOM_FEATURES_WARNING)
    loggers = build_loggers(resolved.loggers if distributed.is_main() else [], run_dir)
    return RunSetup(**vars(model), run_dir=run_dir, eval_batch_size=eval_batch_size(spec), loggers=loggers)


def make_trainer(setup: RunSetup, progress, extras: RunExtras | None = None) -> Trainer:
    spec, data, model = setup.resolved.spec, setup.data, setup.built.model
    train, num_classes = spec.train, len(data.classes)
    if not trains_whole_backbone(setup.plans):
        keep_freed_memory()
    workers = resolve_workers(spec.data.num_workers, len(data.train))
    sharded = distributed.active()
    train_batches, val_batches = batch_sources(setup, sharded=sharded)
    val_images = val_batches  # TTA views are made from images, never from cached activations
    train_batches, val_batches = attach_caches(setup, train_batches, val_batches, progress.message)
    base_lrs = [lr * factor for lr, factor in zip(
        base_learning_rates(model.num_groups, train.optimizer.lr, train.backbone_lr_mult),
        layer_decay_factors(model.num_groups, train.layer_decay))]
    optimizer = build_optimizer(model.group_parameters(), train.optimizer, base_lrs)
    state = TrainState(model, optimizer, Schedule(train.scheduler, train.epochs, len(train_batches)),
                       monitor=train.monitor, keep=train.keep)
    weights = class_weights(data.train, num_classes) if train.class_weights == "balanced" else None
    criterion = torch.nn.CrossEntropyLoss(weight=None if weights is None else weights.to(setup.device),
                                          label_smoothing=train.label_smoothing)
    config = LoopConfig(train.epochs, train.seed, train.bn, setup.device, setup.precision, num_classes,
                        train.early_stopping.patience, train.early_stopping.min_delta,
                        fast=setup.fast)
    progress.message(f"training: {train.strategy.name}, {train.optimizer.name} lr {train.optimizer.lr:g}, "
                     f"scheduler {train.scheduler.name}, {train.epochs} epoch(s) of {len(train_batches)} batches; "
                     f"device {setup.device}, {torch.get_num_threads()} thread(s), {workers} loader worker(s), "
                     f"{setup.precision} frozen/eval passes"
                     + (" (BatchNorm folded, channels_last)" if config.fast == "folded" else ""))

    def log_metrics(trainer: Trainer, record: dict) -> None:
        setup.loggers.epoch(record)  # the metrics logger writes metrics.jsonl; then the spec's others

    # best and last are saved by tlzoo.rundir.resume.guard_training, with the training state and signals
    trainer = Trainer(state, setup.strategy, criterion, train_batches, val_batches, config, progress,
                      epoch_hooks=[log_metrics, *(extras.epoch_hooks if extras else [])], plans=setup.plans)
    if sharded:  # DDP: the ranks' gradients averaged in every backward pass
        trainer.sync = distributed.GradientSync(model, setup.device)
    attach_recipe(trainer, train, val_images, progress.message)
    return trainer


def attach_recipe(trainer: Trainer, train, val_images, log) -> None:
    """EMA, mixup/cutmix and validation TTA as the spec's train section asks (all off by default)."""
    from tlzoo.engine.ema import WeightAverage
    from tlzoo.engine.mixing import Mixer

    trainer.mixer = Mixer.from_spec(train.mix, train.seed)
    trainer.ema = WeightAverage(train.ema) if train.ema.enabled else None
    trainer.tta, trainer.tta_source = train.tta, val_images
    notes = [f"EMA of the trainable weights (decay {train.ema.decay:g})"] if train.ema.enabled else []
    if trainer.mixer is not None:
        notes.append(f"mixup alpha {train.mix.mixup_alpha:g}, cutmix alpha {train.mix.cutmix_alpha:g} where the "
                     "trainable part starts")
    if train.layer_decay is not None:
        notes.append(f"layer-wise lr decay {train.layer_decay:g}")
    if train.tta != "none":
        notes.append(f"validation TTA '{train.tta}'")
    if notes:
        log("recipe: " + "; ".join(notes))


def finished_run(resumed, stream, report_expected: bool) -> RunResult | None:
    """A resume with nothing left to train: say so, how to extend it, and return the run's summary.

    summary.json is written before the findings and the report: a run killed between them (SIGKILL, a lost
    machine) has a summary but no report, and the loop runs again (training nothing) to write the rest."""
    reason = resumed.complete
    summary_file = resumed.run_dir / outputs.SUMMARY_FILE
    if reason is None or not summary_file.is_file():  # without a summary the loop runs (trains nothing) to write it
        return None
    if report_expected and not (resumed.run_dir / REPORT_FILE).is_file():
        return None
    print(f"tlzoo: {resumed.run_dir} is complete: {reason}; nothing to resume.\n  HINT: {resumed.extend_hint()}",
          file=stream, flush=True)
    return RunResult(resumed.run_dir, outputs.read_json(summary_file, "run summary"))


def run_summary(setup: RunSetup, state: TrainState, seconds: float) -> dict:
    """summary.json: the run's best epoch, its metrics, per-class figures and confusion matrix."""
    classes = setup.data.classes
    best = state.best_record or {}
    confusion = state.best_confusion or []
    per_class = dict(zip(classes, per_class_accuracy(confusion, len(classes))))
    return {
        "run_dir": str(setup.run_dir),
        "spec_hash": outputs.spec_hash(setup.spec_json),
        "classes": classes,
        "num_train": len(setup.data.train),
        "num_val": len(setup.data.val),
        "skipped": len(setup.data.skipped),
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "monitor": state.monitor,
        "keep": state.keep,
        "best_epoch": state.best_epoch,
        "best": {k: v for k, v in best.items() if k not in ("epochs", "is_best")},
        "per_class_accuracy": per_class,
        "per_class": per_class_metrics(classes, confusion),
        "confusion_matrix": confusion,
        "last": state.history[-1] if state.history else None,
        "seconds": seconds,
    }


class SilentStream:
    """Where the progress of ranks other than 0 goes: one display per job."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def run_spec(resolved, output: Path | None = None, stream=None, resume: Path | None = None,
             allow_changes=(), extras: RunExtras | None = None) -> RunResult:
    """`train_and_report`, in the process group of a torchrun job when WORLD_SIZE > 1 (else exactly as is)."""
    asked = resolved.spec.train.distributed
    if distributed.launched_worker():
        from tlzoo.runtime.interrupts import stop_when_orphaned

        stop_when_orphaned()
    with distributed.process_group(asked.backend, asked.timeout_s, resolve_device(resolved.spec.train.device).type):
        if not distributed.active():
            return train_and_report(resolved, output, stream, resume, allow_changes, extras)
        from tlzoo.data.batches import local_batch_size

        local_batch_size(resolved.spec.data.batch_size)  # refused before any work when N does not divide it
        try:
            return train_and_report(resolved, output, stream if distributed.is_main() else SilentStream(), resume,
                                    allow_changes, extras)
        except TlzooError:
            raise
        except Exception as exc:
            if distributed.collective_failure(exc):  # a peer died or stopped answering: say so, no traceback
                raise distributed.lost_peer_error(exc) from None
            raise


def train_and_report(resolved, output: Path | None = None, stream=None, resume: Path | None = None,
                     allow_changes=(), extras: RunExtras | None = None) -> RunResult:
    """Train and evaluate as the spec says; returns the run directory and its summary.

    `resume`: a run directory whose `last` checkpoint the run continues from;
    `allow_changes`: spec fields (`epochs`, `train.scheduler`) that may differ from the run's.
    SIGTERM and Ctrl-C save a resumable `last` and raise `Interrupted`.
    `extras`: files, report sections, epoch hooks and scanned data from a room above (tlzoo.engine.extras).
    """
    stream = stream or sys.stderr
    started = time.perf_counter()
    configure_threads(keep_buffers=False)  # decided in make_trainer, once the model's groups are known
    if distributed.active():  # the ranks of one machine share its cores
        torch.set_num_threads(distributed.threads_per_process(torch.get_num_threads()))
    progress = make_progress(resolved.spec.train.epochs, stream)
    with contextlib.ExitStack() as writers:  # the run directory's writer lock, held to the last write
        # a run-only cache folder lives until the report is written: the test pass, trust fit and findings read it
        writers.enter_context(run_cache_scope())
        if resume is not None and distributed.is_main() and Path(resume).is_dir():
            writers.enter_context(writer_lock(Path(resume)))
        return _train_and_report(resolved, output, stream, resume, allow_changes, progress, writers, started, extras)


def _train_and_report(resolved, output, stream, resume, allow_changes, progress, writers, started,
                      extras: RunExtras | None = None) -> RunResult:
    from tlzoo.engine.adopt import ADOPTABLE_CHANGES, take_over, trained_seconds
    from tlzoo.runtime.interrupts import Interrupted, StopRequest, signal_name
    from tlzoo.rundir.resume import guard_training, open_adopted, open_resume

    resumed, claimed, adopted = None, [], None
    if resume is not None:
        resumed = open_resume(resume, outputs.resolved_spec_json(resolved), allow_changes)
        finished = finished_run(resumed, stream, resolved.spec.report.enabled)
        if finished is not None:
            return finished
    elif extras is not None and extras.adopt is not None:
        adopted = open_adopted(extras.adopt, outputs.resolved_spec_json(resolved), ADOPTABLE_CHANGES)
    try:
        # the allocator setting ends with the training (a notebook's process goes on)
        # images the scan decodes are kept for the first epoch (a photo is decoded once) until training ends
        with StopRequest(stream) as stop, allocator_scope(), keeping_decoded() as kept:
            stop.duplicate_seconds = 2.0 if distributed.active() else 0.0  # torchrun forwards a terminal's Ctrl-C
            setup = prepare(resolved, output, progress.message, resumed, claimed, writers, extras)
            setup.loggers.start(setup.spec_json, setup.data.classes)
            if resumed is None and adopted is None:  # else the checkpoint holds the head
                fit_head_first(setup, progress.message)
            with progress:
                trainer = make_trainer(setup, progress, extras)
                trainer.epoch_hooks.append(lambda *_: kept.clear())  # the first epoch took what it needed
                guard_training(trainer, setup, stop, resumed or adopted, sidecar, progress.message)
                if adopted is not None:
                    take_over(trainer, setup, adopted, sidecar, stop)
                state = trainer.fit()
    except BaseException:  # a run that fails before its first checkpoint leaves no empty run directory
        for run_dir, created in claimed:
            outputs.remove_unfinished(run_dir, remove_folder=created,
                                      extra_files=extras.file_names() if extras else ())
        raise
    summary = run_summary(setup, state, time.perf_counter() - started + (trained_seconds(adopted) if adopted else 0))
    if not distributed.is_main():  # rank 0 alone scores the test split and writes the summary and report
        return RunResult(setup.run_dir, summary)
    try:
        with StopRequest(stream, what="after training"):
            finish_run(setup, trainer, summary, progress.message)
    except Interrupted as exc:  # the checkpoints are whole: a resume trains nothing and writes what is missing
        raise Interrupted(exc.signum, f"stopped by {signal_name(exc.signum)} after training, before the test "
                                      "split, calibration and report were all written; the checkpoints are kept",
                          f"finish them with: {distributed.resume_command(setup.run_dir)}") from None
    return RunResult(setup.run_dir, summary)


def finish_run(setup: RunSetup, trainer: Trainer, summary: dict, log) -> None:
    """After the last epoch: the test split once, the trust fit (or, with train.refit, the trust fit, the refit
    and then the test split), summary.json, the loggers' end and the report."""
    from tlzoo.engine.refit import refit_then_test, refitting

    if refitting(setup, log):
        trust = refit_then_test(setup, trainer, summary, make_trainer, log)
    else:
        held_out = score_test(setup, log)
        if held_out is not None:
            summary["test"] = held_out[0]
        trust = fit_trust(setup, trainer, held_out[1] if held_out is not None else None, log)
    if trust is not None:
        summary["trust"] = trust
    outputs.write_json(setup.run_dir / outputs.SUMMARY_FILE, summary)
    best_path = setup.run_dir / "best.safetensors"
    setup.loggers.end(summary, best_path if best_path.is_file() else None)
    report_after_run(setup, log, trainer.best_eval, trust["calibration"]["temperature"] if trust is not None else 1.0)
