"""What each step of `tlzoo train` will cost on this machine, from the measured speeds (tlzoo.auto.throughput).

Estimates err on the long side (fixed costs are added generously): the budget
is a promise, and a step that ends early only leaves time unused.
"""

from __future__ import annotations

from dataclasses import dataclass

from tlzoo.auto import head_sweep
from tlzoo.auto.recipes import BATCH_SIZE, finetune_epochs, refits
from tlzoo.auto.throughput import FinetuneSpeed, Speed

REPORT_S = 10.0  # report.html: matplotlib's import, figures, thumbnails of the top losses, per_image.csv
FOLD_S = 5.0  # folding BatchNorm into a fresh model's convolutions before its first image pass (lite0: 2-7 s)
RUN_OVERHEAD_S = 4.0  # a run's start and end: spec, run directory, loggers, summary
# an epoch's fixed cost besides its checkpoints (validation, metrics lines): a head epoch on cached features took
# 0.1 s with its writes on a quiet 2-core Xeon; a busier machine scales every estimate (Search.slowdown)
EPOCH_OVERHEAD_S = 0.25
HEAD_EPOCH_IMAGE_S = 2e-5  # an epoch of a head on cached features, per image (reading the cache, the step)
# the probe's fit (3-fold CV over 3 penalties, then the fit; L-BFGS, one thread), per row x feature, growing with
# the rows as the features outgrow the caches: lite0's real features of 250-4,000 images (8 classes) took
# 2.8e-6 to 7.5e-6 s per row x feature on an AVX2 EPYC, 38 s for 4,000 rows; 8 to 64 classes cost alike
PROBE_FIT_UNIT_S = 3e-6
PROBE_FIT_ROWS_DOUBLING = 2000  # rows at which the unit cost has doubled
# the search's probe fits on at most this many training rows (a seeded, stratified subset above it): it ranks
# backbones, which the rows above this change little (lite0 and lite2 on 2,000 and 4,000 images of one set rank
# alike), while its fit would grow past a minute a backbone on 4,000 images
PROBE_ROWS = 2000
SWEEP_STEP_S = (5e-4, 3e-4)  # a head sweep's step: fixed, and per seed (5 seeds: 0.9-1.8 ms on a 2-core Xeon)
SWEEP_EPOCH_S = 1e-2  # a sweep epoch's new batch orders and its validation ...
SWEEP_VAL_IMAGE_S = 1e-6  # ... and per validation image


@dataclass(frozen=True)
class Sizes:
    train: int
    val: int
    test: int  # 0 without a test split
    classes: int

    @property
    def searched(self) -> int:
        """Images the search reads: train and validation, never test."""
        return self.train + self.val


def probe_fit_s(rows: int, features: int) -> float:
    """The linear probe's fit on `rows` training features of `features` dimensions (tlzoo.findings.logistic)."""
    return PROBE_FIT_UNIT_S * rows * features * (1 + rows / PROBE_FIT_ROWS_DOUBLING)


def probe_s(speed: Speed, sizes: Sizes) -> float:
    """Features of train and val through the whole backbone, and the probe's fit on (at most PROBE_ROWS of) them."""
    fit = probe_fit_s(min(sizes.train, PROBE_ROWS), speed.num_features)
    return speed.features_s(sizes.searched) + FOLD_S + fit + 1.0


def head_sweep_s(sizes: Sizes, seeds: int) -> float:
    """The head sweep (tlzoo.auto.head_sweep): every setting's epochs, each of batches of 32 over the training
    features with `seeds` heads side by side; Python's steps, not arithmetic, set the pace."""
    steps = -(-sizes.train // BATCH_SIZE)
    step_s = SWEEP_STEP_S[0] + SWEEP_STEP_S[1] * seeds
    epoch_s = steps * step_s + SWEEP_EPOCH_S + sizes.val * SWEEP_VAL_IMAGE_S
    return len(head_sweep.LRS) * sum(head_sweep.EPOCHS) * epoch_s


def checkpoints_s(speed: Speed, epochs: int) -> float:
    """Each epoch's fixed cost and its best and last checkpoints at the disk's measured speed (on a shared 2-core
    machine, a head-only epoch on cached lite0 features took 1.6-2.4 s, nearly all of it these writes)."""
    return epochs * (EPOCH_OVERHEAD_S + 2 * speed.parameters * 4 * speed.write_s)


def finish_s(speed: Speed, sizes: Sizes) -> float:
    """The end of a final run: the test split through the best model, then the report with its data findings
    (tlzoo.engine.data_findings: the pretrained features of the test split too, perceptual hashes of every
    image, an out-of-fold probe over all of them)."""
    test_pass = FOLD_S + sizes.test * (speed.forward_s + speed.load_s) if sizes.test else 0.0
    images = sizes.searched + sizes.test
    findings = (test_pass + images * speed.load_s
                + probe_fit_s(images, speed.num_features))
    return test_pass + REPORT_S + findings


def final_head_s(speed: Speed, sizes: Sizes, epochs: int) -> float:
    """A head-only final run whose features are in the cache: build, scan (test included), epochs, its refit on
    a small split, end."""
    scanned = sizes.searched + sizes.test
    return (speed.build_s + scanned * speed.load_s + epochs * sizes.searched * HEAD_EPOCH_IMAGE_S
            + checkpoints_s(speed, epochs) + trust_s(speed, sizes, False) + refit_s(speed, sizes, epochs)
            + finish_s(speed, sizes) + RUN_OVERHEAD_S)


def finetune_epoch_s(tune: FinetuneSpeed, sizes: Sizes) -> float:
    return sizes.train * tune.step_s + sizes.val * tune.top_s


def trust_s(speed: Speed, sizes: Sizes, fine_tuned: bool) -> float:
    """Every run's calibration after training (tlzoo.engine.trust_fit): from the cache for a head, else a pass
    over the validation images and a subset of the training ones (counted whole, to err long)."""
    return FOLD_S + sizes.searched * (speed.forward_s + speed.load_s) if fine_tuned else 2.0


def finetune_trial_s(speed: Speed, tune: FinetuneSpeed, sizes: Sizes, epochs: int) -> float:
    """A fine-tune trial: its frozen prefix once over train and val (then cached), its epochs (no calibration:
    the final run fits its own)."""
    prefix = FOLD_S + sizes.searched * (tune.prefix_s + speed.load_s)
    return (speed.build_s + prefix + epochs * finetune_epoch_s(tune, sizes) + checkpoints_s(speed, epochs)
            + RUN_OVERHEAD_S)


def final_finetune_s(speed: Speed, tune: FinetuneSpeed, sizes: Sizes, epochs: int) -> float:
    """The final fine-tune, which takes over its trial's epochs (tlzoo.engine.adopt): build, scan, the trial's
    checkpoints written again, the validation split through the best model (the report's records, which a run
    that trains gets from its best epoch), calibration, its refit of up to `epochs` on a small split, test,
    report."""
    scanned = sizes.searched + sizes.test
    return (speed.build_s + scanned * speed.load_s + checkpoints_s(speed, 1) + sizes.val * tune.top_s
            + trust_s(speed, sizes, True) + refit_s(speed, sizes, epochs, tune) + finish_s(speed, sizes)
            + RUN_OVERHEAD_S)


def refit_s(speed: Speed, sizes: Sizes, epochs: int, tune: FinetuneSpeed | None = None) -> float:
    """A final run's refit on a small validation split (tlzoo.auto.recipes.refits; tlzoo.engine.refit), 0 on a
    large one: a fresh model, a pass over train and val together (its frozen prefix, counted as the whole
    backbone to err long), `epochs` over both (a head's on cached features, or a fine-tune's), and the unknown
    score's bank from the refitted model."""
    if not refits(sizes.val):
        return 0.0
    both = Sizes(sizes.searched, sizes.val, 0, sizes.classes)
    one_pass = FOLD_S + sizes.searched * (speed.forward_s + speed.load_s)
    epoch_s = sizes.searched * HEAD_EPOCH_IMAGE_S if tune is None else finetune_epoch_s(tune, both)
    return speed.build_s + 2 * one_pass + epochs * (epoch_s + EPOCH_OVERHEAD_S)


# before a fine-tune is measured (tlzoo.auto.throughput.measure_finetune), its speeds as shares of the whole
# backbone's forward pass: the frozen prefix is nearly all of it; a top-2 step (forward and backward) took about
# 0.15-0.25 of a forward of lite0 and lite2 on 4,000 images of 2 cores, and is counted long
GUESSED_STEP_SHARE = 0.3


def finetune_start_s(speed: Speed, sizes: Sizes, groups: int = 2) -> float:
    """What a top-`groups` trial of `speed`'s backbone needs to start, its prefix pass and first epoch (its deadline
    stops it after the last epoch that fits: tlzoo.auto.search.finetune_trial), and the final run that takes it
    over, from its forward speed alone: what a probe must leave for (tlzoo.auto.probing.probe_candidates)."""
    tune = FinetuneSpeed(groups, speed.forward_s, GUESSED_STEP_SHARE * speed.forward_s,
                         GUESSED_STEP_SHARE * speed.forward_s)
    epochs = finetune_epochs(sizes.train)
    return finetune_trial_s(speed, tune, sizes, 1) + final_finetune_s(speed, tune, sizes, epochs)
