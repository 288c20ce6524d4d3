"""After training: fit the temperature and the unknown threshold for the best model, and store them with it.

What it reads: the best model's pooled features and logits of the validation
split (the temperature, the threshold) and, for scores that compare with the
training data (knn, mahalanobis), of a seeded subset of the training images
under the eval transform. A run whose backbone never trained (head_only)
reads both from the activation cache when it holds them (a validation entry
always; a training one when the run trained without augmentation), so they
cost no forward pass; otherwise one pass each, timed and logged. The held-out
test split, scored just before with the same model, gives the honest
after-calibration figures and the kept share on images no choice was made on.
"""

from __future__ import annotations

import dataclasses
import time

from tlzoo.cache import FrozenPrefixSource
from tlzoo.engine.pooled_pass import features_over
from tlzoo.engine.held_out import SplitPass, eval_items_source
from tlzoo.runtime import distributed
from tlzoo.rundir.trust_store import load_best_weights, store_trust
from tlzoo.trust import calibration
from tlzoo.trust.options import METHOD_OPTIONS, needs_training_features
from tlzoo.trust.record import FORMAT, calibration_only
from tlzoo.trust.scores import build_scorer, fit_tensors, score_rows, subset_rows
from tlzoo.trust.threshold import kept_share, score_table, threshold_for


def head_only_throughout(setup) -> bool:
    """True when no epoch trained a backbone stage: the cached pooled features are the best model's."""
    stages = len(setup.built.model.stages)
    return bool(setup.plans) and all(plan.frozen_stages == stages for plan in setup.plans)


def cached(trainer_source, setup):
    """The FrozenPrefixSource settings to read pooled features through, or None (compute them).

    Reusing an entry the run itself just used is not news: those lines are left out (trust_fit says where
    the features came from); building one is logged as usual."""
    if distributed.active() or not isinstance(trainer_source, FrozenPrefixSource) or not head_only_throughout(setup):
        return None
    log = trainer_source.settings.log
    return dataclasses.replace(trainer_source.settings,
                               log=lambda line: None if line.startswith("cache: reusing") else log(line))


def split_pass(setup, items, role: str, settings, log) -> tuple[SplitPass, bool]:
    """(features, logits, labels of `items` from the model as it is, whether they came out of the cache)."""
    model = setup.built.model
    source, frozen = eval_items_source(setup, items), 0
    if settings is not None:
        source, frozen = FrozenPrefixSource(source, model, settings, role, 1), len(model.stages)
    features, logits, labels = features_over(model, source, setup.device, setup.precision, frozen, setup.fast, log)
    hit = settings is not None and source.store is not None
    if isinstance(source, FrozenPrefixSource):
        source.close()
    return SplitPass(features, logits, labels), hit


def bank_pass(setup, options, settings, log) -> tuple[SplitPass, bool]:
    """split_pass over the seeded subset of the training images that a knn or mahalanobis score keeps."""
    rows = subset_rows(len(setup.data.train), options.bank_size, setup.resolved.spec.train.seed)
    return split_pass(setup, [setup.data.train[i] for i in rows.tolist()], "train", settings, log)


def fit_trust(setup, trainer, test: SplitPass | None, log) -> dict | None:
    """Fit, store in best, and return summary.json's `trust` part; None when both are off or there is no best."""
    spec = setup.resolved.spec
    wanted, unknown = spec.train.calibration, spec.train.unknown
    best = setup.run_dir / "best.safetensors"
    if wanted.name == "none" and unknown.method == "none":
        log("trust: calibration and unknown detection are off (train.calibration, train.unknown)")
        return None
    if not best.is_file() or not setup.data.val:
        log("trust: not fitted: " + ("no epoch gave a best model" if not best.is_file() else "no validation images"))
        return None
    started = time.perf_counter()
    load_best_weights(setup.built.model, best)
    val, val_cached = split_pass(setup, setup.data.val, "val", cached(trainer.val_source, setup), log)
    temperature = 1.0
    if wanted.name == "temperature":
        temperature = calibration.fit_temperature(val.logits, val.labels, wanted.min_temperature,
                                                  wanted.max_temperature)
        for bound, name in ((wanted.min_temperature, "min_temperature"), (wanted.max_temperature, "max_temperature")):
            if abs(temperature - bound) <= 1e-6 * bound:
                log(f"trust: the temperature fit stopped at train.calibration.{name} {bound:g}: the validation "
                    "split's NLL kept falling (no errors, or nothing but errors); with more validation images "
                    "the fit is better founded")
    record = {"format": FORMAT, "calibration": calibration_only(temperature, wanted.name, "val", len(val.labels)),
              "unknown": None}
    summary = {"calibration": {"method": wanted.name, "temperature": temperature,
                               "val": figures_of(val, temperature, "val")}}
    if test is not None:
        summary["calibration"]["test"] = figures_of(test, temperature, "test")
    tensors, timing = {}, {"val_features": "activation cache" if val_cached else "computed"}
    if unknown.method != "none":
        options = METHOD_OPTIONS[unknown.method].model_validate(unknown.options)
        train_features, train_labels = None, None
        if needs_training_features(unknown.method):
            pass_started = time.perf_counter()
            train, train_cached = bank_pass(setup, options, cached(trainer.train_source, setup), log)
            train_features, train_labels = train.features, train.labels
            images = len(train.labels)
            timing["train_features"] = {"images": images,
                                        "from": "activation cache" if train_cached else "computed",
                                        "seconds": round(time.perf_counter() - pass_started, 3)}
            log(f"trust: pooled features of {images} training images "
                + ("through the activation cache" if train_cached else "computed with the best model")
                + f" in {timing['train_features']['seconds']:.1f}s")
        tensors = fit_tensors(unknown.method, options, train_features, train_labels, len(setup.data.classes))
        dumped = options.model_dump(mode="json")
        scorer = build_scorer(unknown.method, dumped, temperature, tensors)
        val_scores = score_rows(scorer, val.features, val.logits)
        table = score_table(val_scores)
        threshold = threshold_for(unknown.keep, table)
        record["unknown"] = {"method": unknown.method, "options": dumped, "keep": unknown.keep,
                             "threshold": threshold, "val_kept": kept_share(val_scores, threshold),
                             "val_scores": table, "split": "val",
                             "tensors": {name: list(t.shape) for name, t in tensors.items()}}
        summary["unknown"] = {"method": unknown.method, "options": dumped, "keep": unknown.keep,
                              "threshold": threshold, "val_kept": record["unknown"]["val_kept"],
                              "val_images": len(val.labels)}
        if test is not None:
            summary["unknown"]["test_kept"] = kept_share(score_rows(scorer, test.features, test.logits), threshold)
            summary["unknown"]["test_images"] = len(test.labels)
    store_trust(setup.run_dir / "best", record, tensors)
    timing["seconds"] = round(time.perf_counter() - started, 3)
    summary["cost"] = timing
    log(trust_line(summary))
    return summary


def add_test_figures(setup, summary: dict, test: SplitPass, log) -> None:
    """The test split's figures, into a `trust` summary fitted before the model in best changed (train.refit),
    with the temperature, threshold and score stored with that model."""
    from tlzoo.rundir.checkpoint import load_checkpoint
    from tlzoo.rundir.trust_store import read_trust

    best = setup.run_dir / "best"
    tensors, meta = load_checkpoint(best)
    stored = read_trust(meta, tensors, best)
    if stored is None:
        return
    summary["calibration"]["test"] = figures_of(test, stored.temperature, "test")
    if summary.get("unknown") and stored.scorer is not None:
        summary["unknown"]["test_kept"] = kept_share(stored.scores(test.features, test.logits), stored.threshold())
        summary["unknown"]["test_images"] = len(test.labels)
    log(trust_line(summary))


def figures_of(split: SplitPass, temperature: float, name: str) -> dict:
    """Before/after figures and the reliability bins of both, for the report's diagram."""
    figures = calibration.before_after(split.logits, split.labels, temperature, name)
    for when, t in (("before", 1.0), ("after", temperature)):
        bins = calibration.reliability((split.logits.double() / t).softmax(1), split.labels)
        figures[when]["reliability"] = {key: [row[key] for row in bins] for key in ("count", "accuracy",
                                                                                     "confidence")}
    return figures


def trust_line(summary: dict) -> str:
    cal = summary["calibration"]
    where = "test" if "test" in cal else "val"
    line = (f"trust: temperature {cal['temperature']:.3f} ({cal['method']}); {where} "
            f"{calibration.change_text(cal[where]['before'], cal[where]['after'])}")
    unknown = summary.get("unknown")
    if unknown:
        line += (f"; unknown ({unknown['method']}): threshold {unknown['threshold']:.4g} keeps "
                 f"{unknown['val_kept']:.1%} of {unknown['val_images']} validation images")
        if "test_kept" in unknown:
            line += f", {unknown['test_kept']:.1%} of {unknown['test_images']} test images"
    return line + f" ({summary['cost']['seconds']:.1f}s)"
