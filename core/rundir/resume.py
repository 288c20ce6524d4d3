"""Resuming a run from its `last` checkpoint, and guarding a live run with checkpoints and signals.

`open_resume` reads RUN_DIR/last before anything is trained and refuses a spec
that would make the continued run differ from an uninterrupted one, naming
every field that differs, unless the user allowed that field explicitly
(`--allow-changes epochs`). What makes a run (backbone, head, optimizer,
classes) can never change. The run's spec.json is never rewritten; each resume
is recorded in resumes.jsonl. `guard_training` makes a Trainer write `best` and
the full-state `last` atomically (the one place a run saves its weights),
honour SIGTERM/Ctrl-C at the end of a step, and, when resuming, continue from
the saved epoch (or the saved step inside an epoch) with the RNG states,
counters and history as they were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tlzoo.rundir.checkpoint import (clean_stale_temporaries, embedded_meta, load_checkpoint,
                                     save_checkpoint, weights_path)
from tlzoo.rundir.training_state import (EMA, EpochPosition, model_tensors, restore_training_state,
                                         training_checkpoint)
from tlzoo.rundir.writing import json_safe
from tlzoo.errors import TlzooError
from tlzoo.model.weights import TORCH_SUFFIXES, load_state_file
from tlzoo.runtime import distributed

LAST, BEST = "last", "best"
RESUMES_FILE = "resumes.jsonl"

# what a run is: changing any of these makes the saved weights or optimizer state meaningless
FIXED_FIELDS = (
    ("backbone", "name"), ("backbone", "options"), ("backbone", "weights"),
    ("head", "dropout"), ("head", "hidden"),
    ("train", "optimizer", "name"),
)
# where the run is written and how fast, not what it computes (loader workers give identical batches)
# (calibration and the unknown threshold are fitted after training, from the best model: free too)
FREE_FIELDS = ("output", "data.num_workers", "cache.dir", "cache.memory_mb", "train.distributed",
               "train.calibration", "train.unknown")


def _get(data: dict, path: tuple):
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _under(field: str, names) -> bool:
    return any(field == name or field.startswith(name + ".") for name in names)


def _matches(field: str, names) -> bool:
    """`epochs` allows train.epochs, `train.scheduler` allows train.scheduler.*."""
    return any(field == name or field.endswith("." + name) or field.startswith(name + ".") for name in names)


@dataclass
class ResumeFrom:
    run_dir: Path
    tensors: dict
    meta: dict  # the sidecar; meta["training"] holds what training_checkpoint wrote
    changed: dict  # allowed spec fields that differ from the run's: field -> (in the run, now)
    epochs: int  # train.epochs of the continued run
    adopted: bool = False  # a finished run whose epochs a new run takes over (open_adopted), not a resume

    @property
    def training(self) -> dict:
        return self.meta["training"]

    @property
    def complete(self) -> str | None:
        """Why nothing is left to train (the run finished or stopped early), or None."""
        counters = self.training["counters"]
        if self.training["position"].get("batch", 0) > 0:
            return None
        if counters.get("stopped_early"):
            return (f"it stopped early after epoch {counters['epoch']} (train.early_stopping.patience "
                    "epochs without improvement)")
        if counters["epoch"] >= self.epochs:
            return f"all {self.epochs} epoch(s) are trained"
        return None

    def extend_hint(self) -> str:
        more = self.training["counters"]["epoch"] + 10
        if self.training["counters"].get("stopped_early"):
            return "start a new run (without --resume) to train it differently"
        return (f"to train more epochs: tlzoo run --resume {self.run_dir} --allow-changes epochs "
                f"--set train.epochs={more}")

    def accept(self, classes: list[str]) -> Path:
        """The run directory, once the spec's data gives the run's classes in the run's order."""
        saved = list(self.meta.get("classes", []))
        if list(classes) != saved:
            raise TlzooError(
                f"cannot resume {self.run_dir}: the data (data.reader) now gives classes {classes}, "
                f"the run was trained on {saved}",
                "resume on the same data, or start a new run without --resume",
            )
        return self.run_dir

    def record(self, spec_hash: str) -> None:
        """One line per resume in resumes.jsonl: where it continued and what changed."""
        from tlzoo.rundir import outputs

        counters = self.training["counters"]
        outputs.append_jsonl(self.run_dir / RESUMES_FILE, {
            "epoch": counters["epoch"], "step": counters["step"],
            "batch": self.training["position"].get("batch", 0),
            "changes": {field: {"run": before, "now": now} for field, (before, now) in self.changed.items()},
            "spec_hash": spec_hash,
        })


def open_adopted(run_dir: str | Path, spec_json: dict, allow_changes=()) -> ResumeFrom:
    """A finished run whose trained epochs a new run with `spec_json` takes over instead of training them again
    (tlzoo train's final run and its trial): checked as a resume is, and refused unless it has finished."""
    adopted = open_resume(run_dir, spec_json, allow_changes)
    if adopted.complete is None:
        raise TlzooError(f"cannot take over {run_dir}: its training has not finished",
                         f"finish it first (tlzoo run --resume {run_dir}), or train the spec from the start")
    adopted.adopted = True
    return adopted


def resumed_spec_raw(run_dir: str | Path) -> tuple[dict, str]:
    """(spec, source) to continue RUN_DIR with when no spec is given: the one its `last` trained with."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TlzooError(f"--resume {run_dir}: no such run directory", "pass the folder that `tlzoo run` printed")
    last = weights_path(run_dir / LAST)
    if last.is_file():
        meta = embedded_meta(last) or {}
        training = meta.get("training") if isinstance(meta, dict) else None
        if isinstance(training, dict) and isinstance(training.get("spec"), dict):
            return training["spec"], f"{last} (the spec it was trained with)"
    from tlzoo.rundir import outputs

    spec_file = run_dir / outputs.SPEC_FILE
    return outputs.read_json(spec_file, "resolved spec"), str(spec_file)


def load_resumed_spec(run_dir: str | Path, registry, overrides=()):
    """`tlzoo run --resume RUN_DIR` without a spec: the run's own spec, with any --set overrides."""
    from tlzoo.spec import apply_overrides, resolve_spec

    raw, source = resumed_spec_raw(run_dir)
    raw = apply_overrides(json.loads(json.dumps(raw)), list(overrides), source)
    return resolve_spec(raw, registry, Path(run_dir).resolve(), source)


def open_resume(run_dir: str | Path, spec_json: dict, allow_changes=()) -> ResumeFrom:
    """Load RUN_DIR/last and check that `spec_json` (the resolved new spec) may continue it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TlzooError(f"--resume {run_dir}: no such run directory", "pass the folder that `tlzoo run` printed")
    clean_stale_temporaries(run_dir)
    stem = run_dir / LAST
    if not weights_path(stem).is_file():
        for suffix in TORCH_SUFFIXES:  # refused unless it is a plain tensor file, and even then it lacks state
            if Path(f"{stem}{suffix}").is_file():
                load_state_file(Path(f"{stem}{suffix}"))
                raise TlzooError(f"{stem}{suffix} is not a tlzoo training checkpoint (no optimizer or RNG state)",
                                 "resume only from a last.safetensors that tlzoo wrote")
        raise TlzooError(f"cannot resume {run_dir}: it holds no {weights_path(stem).name} "
                         "(the run stopped before its first epoch ended)",
                         "start the run again without --resume")
    tensors, meta = load_checkpoint(stem)
    if not isinstance(meta.get("training"), dict) or "spec" not in meta["training"]:
        raise TlzooError(f"{weights_path(stem)} holds model weights only, no training state to resume from",
                         "resume only from a last.safetensors that tlzoo wrote")
    saved_spec = meta["training"]["spec"]
    if "base_dir" not in saved_spec and "spec_dir" in meta:  # a run saved before specs recorded their base_dir
        saved_spec = {**saved_spec, "base_dir": meta["spec_dir"]}
    saved_spec = with_new_defaults(saved_spec)
    fixed, refused, changed = [], [], {}
    for path in FIXED_FIELDS:
        before, now = _get(saved_spec, path), _get(spec_json, path)
        if before != now:
            fixed.append(f"{'.'.join(path)} is {_shown(before)} in the run and {_shown(now)} in the spec")
    mid_epoch = meta["training"]["position"].get("batch", 0) > 0
    if mid_epoch and _get(saved_spec, ("data", "batch_size")) != _get(spec_json, ("data", "batch_size")):
        fixed.append("data.batch_size differs and the run stopped inside an epoch")
    fixed_names = {".".join(path) for path in FIXED_FIELDS} | ({"data.batch_size"} if mid_epoch else set())
    for field in sorted(_differences(saved_spec, spec_json)):
        if _under(field, FREE_FIELDS) or _under(field, fixed_names):  # free, or reported above
            continue
        before, now = _get(saved_spec, tuple(field.split("."))), _get(spec_json, tuple(field.split(".")))
        if _matches(field, allow_changes):
            changed[field] = (before, now)
        else:
            refused.append(f"{field} is {_shown(before)} in the run and {_shown(now)} in the spec")
    if fixed:
        raise TlzooError(f"cannot resume {run_dir} with this spec: " + "; ".join(fixed),
                         f"these fields make the run what it is and cannot change; resume with the run's own "
                         f"spec (tlzoo run --resume {run_dir}), or start a new run without --resume")
    if refused:
        names = ",".join(field for field in _differences(saved_spec, spec_json)
                         if not _under(field, FREE_FIELDS) and not _matches(field, allow_changes))
        raise TlzooError(f"cannot resume {run_dir} with this spec, the continued run would differ from an "
                         "uninterrupted one: " + "; ".join(refused),
                         f"resume with the run's own spec (tlzoo run --resume {run_dir}); to change these "
                         f"fields anyway, add --allow-changes {names}")
    epochs = _get(spec_json, ("train", "epochs"))
    return ResumeFrom(run_dir, tensors, meta, changed, int(epochs) if isinstance(epochs, int) else 0)


def with_new_defaults(saved: dict) -> dict:
    """A spec saved by an older tlzoo lacks the fields added since: they count as their defaults,
    which is what that run did (a spec that no longer validates is compared as it is)."""
    from pydantic import ValidationError

    from tlzoo.spec import RunSpec

    try:
        filled = RunSpec.model_validate(saved).model_dump(mode="json")
    except ValidationError:
        return saved
    return _add_missing(saved, filled)


def _add_missing(saved, filled):
    if not isinstance(saved, dict) or not isinstance(filled, dict):
        return saved
    out = dict(saved)
    for key, value in filled.items():
        out[key] = _add_missing(saved[key], value) if key in saved else value
    return out


def _differences(before, now, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(before) | set(now)):
            out += _differences(before.get(key), now.get(key), f"{prefix}{key}.")
        return out
    return [] if before == now else [prefix.rstrip(".")]


def check_world_size(resumed: ResumeFrom, position: dict) -> None:
    """A stop inside an epoch continues only with as many processes as it had (each kept its own RNG there);
    at an epoch boundary any number continues, since the global batch and its order do not depend on it."""
    saved, now = int(resumed.training.get("world_size", 1)), distributed.world_size()
    if position.get("batch", 0) > 0 and saved != now:
        raise TlzooError(f"cannot resume {resumed.run_dir} with {now} process(es): it stopped inside epoch "
                         f"{resumed.training['counters']['epoch'] + 1} with {saved} process(es), each holding "
                         "its own place in the epoch",
                         f"resume with {saved} process(es) (tlzoo run --resume {resumed.run_dir} --nproc {saved}, "
                         f"or torchrun --nproc-per-node {saved}); later epoch boundaries accept any number")


def guard_training(trainer, setup, stop, resumed: ResumeFrom | None, sidecar, log) -> None:
    """Checkpoint and interrupt hooks for `trainer`; restores `resumed` into it. Arms `stop`."""
    from tlzoo.rundir import outputs

    run_dir, state = setup.run_dir, trainer.state
    generator = getattr(trainer.train_source, "generator", None)
    hint = f"continue with: {distributed.resume_command(run_dir)}"

    def save_last(position: EpochPosition | None, record: dict) -> str:
        # under torchrun a stop inside an epoch keeps every rank's RNG and loss so far (a collective: all ranks
        # stop at the same step); rank 0 alone writes, and the others wait until `last` is whole
        ranks = distributed.all_gather_object(position.rank_json()) if position and distributed.active() else None
        if distributed.is_main():
            tensors, training = training_checkpoint(state, setup.spec_json, position, generator)
            if trainer.ema is not None:  # the average goes on where it stopped, as in an uninterrupted run
                tensors.update({EMA + name: average for name, average in trainer.ema.shadow.items()})
            if distributed.active():
                training["world_size"] = distributed.world_size()
            if ranks:
                training["ranks"] = ranks
            with stop.saving_checkpoint():
                save_checkpoint(run_dir / LAST, tensors, {**sidecar(setup, LAST, record), "training": training})
        distributed.barrier()
        return f"resumable checkpoint saved in {weights_path(run_dir / LAST)}"

    def save_best(_trainer, record: dict) -> None:
        if not distributed.is_main():
            return
        with stop.saving_checkpoint():
            save_checkpoint(run_dir / BEST, model_tensors(state.model), sidecar(setup, BEST, record))

    def after_step(_trainer, _loss) -> None:
        batch, total, count = trainer.position
        where = f"at epoch {state.epoch + 1}, step {state.step}"
        latest = state.history[-1] if state.history else {"epoch": state.epoch}
        stop.stop(lambda: save_last(EpochPosition.capture(batch, total, count), latest), where, hint)

    def after_epoch(_trainer, record: dict) -> None:
        stop.stop(lambda: f"checkpoint of epoch {record['epoch']} is in {weights_path(run_dir / LAST)}",
                  f"after epoch {record['epoch']}", hint)

    trainer.save_best = save_best
    trainer.save_last = lambda _trainer, record: save_last(None, record)
    trainer.step_hooks.append(after_step)
    trainer.epoch_hooks.append(after_epoch)
    if distributed.active():
        stop.agree = distributed.all_reduce_max  # every rank honours a signal any of them got, at the same step
    if resumed is not None:
        source = str(weights_path(resumed.run_dir / LAST))
        position = resumed.training["position"]
        check_world_size(resumed, position)
        restore_training_state(state, resumed.tensors, resumed.training, source, generator)
        if trainer.ema is not None:
            trainer.ema.load({name[len(EMA):]: tensor for name, tensor in resumed.tensors.items()
                              if name.startswith(EMA)}, state.model)
        if position.get("batch", 0) > 0:
            trainer.resume_at = EpochPosition.from_checkpoint(resumed.tensors, resumed.training)
            if distributed.rank() > 0:  # rank 0's RNG is the checkpoint's own; the others' are kept beside it
                trainer.resume_at = EpochPosition.from_rank_json(position["batch"],
                                                                 resumed.training["ranks"][distributed.rank()])
        if resumed.adopted:  # the new run writes its own files (tlzoo.engine.adopt); the old run is left as it is
            log(f"taking over the {state.epoch} epoch(s) trained in {resumed.run_dir}: the same training"
                + (f", only {', '.join(resumed.changed)} differ" if resumed.changed else ""))
            stop.armed = True  # a signal waits for the checkpoints to be written (tlzoo.engine.adopt's safe point)
            return
        if distributed.is_main():
            # metrics.jsonl may hold an epoch that `last` does not (a crash between the two writes)
            lines = "".join(json.dumps(json_safe(record), allow_nan=False) + "\n" for record in state.history)
            outputs.atomic_write(run_dir / outputs.METRICS_FILE, lines.encode())
            resumed.record(outputs.spec_hash(setup.spec_json))
        where = f"epoch {state.epoch + 1}" + (f", batch {position['batch'] + 1}" if position.get("batch") else "")
        log(f"resuming {run_dir} at {where} (step {state.step})"
            + (f"; allowed changes: {', '.join(resumed.changed)} (recorded in {run_dir / RESUMES_FILE})"
               if resumed.changed else ""))
    stop.armed = True
