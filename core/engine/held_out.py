"""The held-out test split: scored once, at the end, with the best model the validation split chose.

The validation split picks the best epoch, so its score is optimistic; a test
split that played no part in that choice gives the honest figure.
"""

from __future__ import annotations

from tlzoo.data.batches import SourceSetup, eval_source
from tlzoo.data.transforms import build_eval_transform
from tlzoo.engine.metrics import evaluate
from tlzoo.model.weights import load_state_file
from tlzoo.runtime.device import resolve_workers


def score_test(setup, log) -> dict | None:
    """summary["test"] for a run whose reader gave a test split, scored with `best`; None without one."""
    items = setup.data.test
    best = setup.run_dir / "best.safetensors"
    if items is None:
        return None
    if not best.is_file():
        log("test split not scored: no epoch gave a best model")
        return None
    spec = setup.resolved.spec
    model = setup.built.model
    model.load_state_dict(load_state_file(best), strict=True)
    source = eval_source(SourceSetup(items, build_eval_transform(setup.built.data_config), setup.eval_batch_size,
                                     resolve_workers(spec.data.num_workers, len(items)), spec.train.seed,
                                     shuffle=False, background=spec.data.background))
    result = evaluate(model, source, len(setup.data.classes), setup.device, setup.precision,
                      fast=setup.fast, log=log)
    per_class = dict(zip(setup.data.classes, result.per_class_accuracy))
    scored = {"model": "best", "count": result.count, "top1": result.top1, "top5": result.top5,
              "loss": result.loss, "per_class_accuracy": per_class, "confusion_matrix": result.confusion}
    log(f"test: {result.count} held-out images scored with the best model: top-1 {result.top1:.4f}"
        + (f", top-5 {result.top5:.4f}" if result.top5 is not None else "") + f", loss {result.loss:.4f}")
    return scored
