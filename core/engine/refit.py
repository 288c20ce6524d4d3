"""`train.refit`: the training run again on the training and validation images together, its last epoch kept.

After a run has trained and fitted its temperature and unknown threshold on the
validation split, the same spec and seed train once more from the start, on both
splits, for as many epochs as the first training ran (the schedule as planned,
so each epoch sees the same learning rates), and its last epoch's weights become
`best`: the test split scores them. There is no validation split left to choose
an epoch by, and the epoch the first run kept is a poor guide on a small split:
it may come early and by one image (flowers12-fewshot-s23: epoch 3 of 8, at 57 of
60 against 56 for epochs 4-8), with the learning rate still high there. Over 26
refitted fine-tunes of held-out small sets, all the epochs scored 1.6 points of
test top-1 more than stopping at the kept epoch (benchmarks/refit_epochs.py;
RESULTS.md, 2026-12-05 17:35). What was fitted on the validation split stays (the
temperature, the threshold): it was measured by a model that had not seen those
images, and the test split shows how well it holds for the refitted one. Scores
that compare with training features (knn, mahalanobis) get their bank again,
from the refitted model.

On a small data set the validation split is a quarter to a third of the labelled
images; training the final model on them too gained 3.2 points of test top-1 on
average over 20 recipes of 7 held-out small sets, less on one of them by 0.4
(benchmarks/refit_ab.py; RESULTS.md, 2026-12-05 13:48).
scikit-learn's search does the same (`refit=True`), AutoGluon its `refit_full`.

`best`'s metadata keeps `refit`: the epochs, the images and the trust summary of
the model before; a run stopped after it finishes without training again.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from tlzoo.data.batches import seed_everything
from tlzoo.engine.head_first import fit_head_first
from tlzoo.engine.loggers import Loggers
from tlzoo.engine.progress import LineStream, PlainProgress
from tlzoo.engine.setup import model_setup
from tlzoo.engine.held_out import score_test
from tlzoo.engine.trust_fit import add_test_figures, bank_pass, fit_trust
from tlzoo.rundir.checkpoint import load_checkpoint, save_checkpoint
from tlzoo.rundir.trust_store import with_trust_tensors
from tlzoo.trust.options import METHOD_OPTIONS, needs_training_features
from tlzoo.trust.scores import fit_tensors

REFIT_KEY = "refit"  # in best's metadata


class StopAfter:
    """An epoch hook: training stops after `epoch` (1-based)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def __call__(self, trainer, record: dict) -> None:
        if record.get("epoch") == self.epoch:
            trainer.state.stopped_early = True


def done_before(setup) -> dict | None:
    """best's `refit` record when an earlier process of this run refitted already (then stopped before its end)."""
    best = setup.run_dir / "best"
    if not (setup.run_dir / "best.safetensors").is_file():
        return None
    return load_checkpoint(best)[1].get(REFIT_KEY)


def refit_best(setup, state, trust: dict | None, make_trainer, log) -> dict:
    """Train again on train + val for the epochs the first training ran, store the last as best (with the trust
    record, its bank renewed); returns summary.json's `refit` part. `make_trainer(setup, progress)` is the
    engine's."""
    epochs = state.epoch  # early stopping or a deadline may have ended the first training before its last epoch
    data = dataclasses.replace(setup.data, train=list(setup.data.train) + list(setup.data.val))
    log(f"refit: epoch 1-{epochs} again on the {len(setup.data.train)} training and {len(setup.data.val)} "
        f"validation images together (train.refit); its validation figures below are on images it trains on")
    started = time.perf_counter()
    seed_everything(setup.resolved.spec.train.seed)  # the new head starts as the first training's did
    built = model_setup(setup.resolved, data, log, setup.device)
    again = dataclasses.replace(setup, **vars(built), loggers=Loggers([]))  # metrics.jsonl keeps the first's
    fit_head_first(again, log)
    progress = PlainProgress(LineStream(lambda line: line.strip() and log("refit: " + line.strip())))
    trainer = make_trainer(again, progress)
    trainer.config = dataclasses.replace(trainer.config, patience=None)  # its validation means nothing now
    trainer.epoch_hooks.append(StopAfter(epochs))
    with progress:
        trainer.fit()
    seconds = time.perf_counter() - started
    record = {"epoch": epochs, "train_images": len(data.train), "seconds": round(seconds, 3), "trust_before": trust}
    store_refitted(setup, again, record, log)
    log(f"refit: done in {seconds:.1f}s; the test split scores the refitted model")
    return {key: value for key, value in record.items() if key != "trust_before"}


def store_refitted(setup, again, record: dict, log) -> None:
    """best: the refitted model's tensors, the first model's training state and trust record (its bank from the
    refitted model), and `refit`."""
    stem = setup.run_dir / "best"
    tensors, meta = load_checkpoint(stem)
    model = again.built.model
    tensors.update({name: value.detach().cpu() for name, value in model.state_dict().items()})
    trust = meta.get("trust")
    if trust is not None and trust.get("unknown") and needs_training_features(trust["unknown"]["method"]):
        bank = renewed_bank(again, trust, log)
        tensors = with_trust_tensors(tensors, bank)
        trust["unknown"]["tensors"] = {name: list(t.shape) for name, t in bank.items()}
    save_checkpoint(stem, tensors, {**meta, REFIT_KEY: record})


def renewed_bank(again, trust: dict, log) -> dict[str, torch.Tensor]:
    """The unknown score's training features, from the refitted model over its own training images."""
    unknown = trust["unknown"]
    options = METHOD_OPTIONS[unknown["method"]].model_validate(unknown["options"])
    passed, _ = bank_pass(again, options, None, log)
    return fit_tensors(unknown["method"], options, passed.features, passed.labels, len(again.data.classes))


def refitting(setup, log) -> bool:
    if not setup.resolved.spec.train.refit:
        return False
    if not (setup.run_dir / "best.safetensors").is_file() or not setup.data.val:
        log("refit: not done: " + ("no epoch gave a best model" if setup.data.val else "no validation images"))
        return False
    return True


def refit_then_test(setup, trainer, summary: dict, make_trainer, log) -> dict | None:
    """train.refit: trust fitted on the validation split by the model that had not seen it, the refit, then the
    test split scored with the refitted model (tlzoo.engine.refit); summary.json's `trust`."""
    before = done_before(setup)
    if before is None:
        trust = fit_trust(setup, trainer, None, log)
        summary[REFIT_KEY] = refit_best(setup, trainer.state, trust, make_trainer, log)
    else:  # an earlier process refitted, then stopped before its end
        trust = before.get("trust_before")
        summary[REFIT_KEY] = {key: value for key, value in before.items() if key != "trust_before"}
        log(f"refit: done before (epoch {before['epoch']}, {before['train_images']} images); not trained again")
    held_out = score_test(setup, log)
    if held_out is not None:
        summary["test"] = held_out[0]
        if trust is not None:
            add_test_figures(setup, trust, held_out[1], log)
    return trust
