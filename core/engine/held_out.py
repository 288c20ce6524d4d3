"""The held-out test split: scored once, at the end, with the best model the validation split chose.

The validation split picks the best epoch, so its score is optimistic; a test
split that played no part in that choice gives the honest figure. The pass
keeps the pooled features and logits, so the calibration and the unknown
threshold fitted afterwards (tlzoo.engine.trust_fit) are measured on it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tlzoo.data.batches import SourceSetup, eval_source
from tlzoo.data.transforms import build_eval_transform
from tlzoo.engine.pooled_pass import features_over
from tlzoo.engine.metrics import summarize
from tlzoo.rundir.trust_store import load_best_weights
from tlzoo.runtime.device import resolve_workers


@dataclass
class SplitPass:
    """Pooled features, logits and labels of a split from the best model."""

    features: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor


def eval_items_source(setup, items):
    """An unsharded, unshuffled source of `items` with the run's eval transform and batch size."""
    spec = setup.resolved.spec
    return eval_source(SourceSetup(items, build_eval_transform(setup.built.data_config), setup.eval_batch_size,
                                   resolve_workers(spec.data.num_workers, len(items)), spec.train.seed,
                                   shuffle=False, background=spec.data.background))


def score_test(setup, log) -> tuple[dict, SplitPass] | None:
    """(summary["test"], the pass) for a run whose reader gave a test split, scored with `best`; None without one."""
    items = setup.data.test
    best = setup.run_dir / "best.safetensors"
    if items is None:
        return None
    if not best.is_file():
        log("test split not scored: no epoch gave a best model")
        return None
    load_best_weights(setup.built.model, best)
    features, logits, labels = features_over(setup.built.model, eval_items_source(setup, items), setup.device,
                                             setup.precision, fast=setup.fast, log=log)
    result = summarize(logits, labels, len(setup.data.classes))
    per_class = dict(zip(setup.data.classes, result.per_class_accuracy))
    scored = {"model": "best", "count": result.count, "top1": result.top1, "top5": result.top5,
              "loss": result.loss, "per_class_accuracy": per_class, "confusion_matrix": result.confusion}
    kept = "the last epoch's model (train.keep)" if setup.resolved.spec.train.keep == "last" else "the best model"
    log(f"test: {result.count} held-out images scored with {kept}: top-1 {result.top1:.4f}"
        + (f", top-5 {result.top5:.4f}" if result.top5 is not None else "") + f", loss {result.loss:.4f}")
    return scored, SplitPass(features, logits, labels)
