"""The search of `tlzoo train`: from measured speeds to one chosen spec, on the validation split only.

1. Speed: build every candidate backbone and time it (tlzoo.auto.timing, tlzoo.auto.throughput).
2. Probe (tlzoo.auto.probing): cheapest first, each candidate that the budget can pay for gets
   `rank`'s linear probe on its pooled features, through the activation cache.
   The best probe wins; a costlier backbone must beat a cheaper one by more than
   one validation image, or the cheaper one is kept. Once one backbone is
   probed, and when the budget can pay for a top-2 fine-tune of it to start
   (its prefix pass and first epoch, as step 4 starts a trial) and its final
   run, a further probe must leave that much time for a fine-tune of its own
   backbone, should it win: on a large set the fine-tune is worth more than
   the probe's choice (4,000 images: the fixed lite2 fine-tune scored 10 points
   above the lite0 head, while a second probe moved the choice by 4 of 480
   validation images; and a backbone chosen by a probe whose fine-tune could
   not start then trained its head, 2,400 images, RESULTS.md 2026-12-05).
3. Head: the learning rate and epochs of a head on those cached features
   (tlzoo.auto.head_sweep: each setting trained from several seeds, scored by
   their mean, since one seed's score on a small validation split is a draw).
4. Fine-tune: while the budget pays for a trial and the final run after it,
   train the top 2 (then 3, ...) backbone groups with the head as a real run,
   at the fine-tune's own learning rate (recipes.FINETUNE_LR), not the head's.
   A trial starts when its prefix pass and first epoch fit; its deadline stops
   it after the last epoch that leaves the final run its time.
   The final run of a fine-tune takes over its trial's epochs (the same spec
   and seed train the same weights: tlzoo.engine.adopt), so after a trial only
   its test split, calibration and report are left to pay for.
5. Other backbones: budget left pays for a top-2 fine-tune trial of each other
   probed backbone, best probe first (a probe of frozen features does not tell
   which backbone fine-tunes best).
6. Fold check (tlzoo.auto.fold_check, after this module's steps): on a
   validation split under 200 images, a chosen fine-tune and the head it
   replaced train again on two other folds, and the head is chosen when it
   validates more than one image better over those and the search's split.

A trial measures the candidate itself, where the probe only stands in for it.
Against head only, a fine-tune is kept unless the head validated better by
more than one image: on the real data sets that tlzoo was measured on (issue
21: produce, clothing, leaf disease, flowers) fine-tuning the top groups scored
as well as the head or up to 6 points better, so within the noise of a small
validation split it is the better bet. Between fine-tunes, more validation
images right win, and on equal images the lower validation loss.

A fine-tune's head starts random. Fitted first (train.head_first, LP-FT) it
scored up to 8 points more on some held-out sets and 8 less on others; as one
more trial, chosen on the validation split, it won there only within the noise
and lost test top-1 (benchmarks/RESULTS.md, 2026-12-04 19:35), so it is left out.

Each step is a row of the Decisions; what the budget could not pay for is a
row too, with its estimate. The test split is not part of any spec here.
"""

from __future__ import annotations

import copy
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tlzoo.auto import estimates
from tlzoo.auto.budget import Budget
from tlzoo.auto.decisions import Decisions, Row
from tlzoo.auto.head_sweep import count_text, seeds_for, sweep_head
from tlzoo.auto.recipes import BATCH_SIZE, DEFAULT_LR, FINETUNE_LR, HEAD_EPOCHS, LABEL_SMOOTHING, WEIGHT_DECAY, \
    Recipe, candidate_spec, finetune_epochs, refits
from tlzoo.auto.throughput import BATCH, DEFAULT_WRITE_S, FinetuneSpeed, Speed, measure_finetune
from tlzoo.engine.extras import RunExtras
from tlzoo.engine.run import run_spec
from tlzoo.spec import resolve_spec

FINETUNE_GROUPS = (2, 3, 4)  # tried in this order while each beats the one before
MAX_SLOWDOWN = 4.0


@dataclass
class Search:
    budget: Budget
    registry: object
    base: dict  # the spec every candidate starts from (tlzoo.auto.recipes.base_spec), without a test split
    data: object  # the search's LabelledData: train and validation
    sizes: estimates.Sizes
    load_s: float  # seconds to read one image, from the scan
    scratch: Path  # trial run directories, removed at the end
    decisions: Decisions
    log: Callable[[str], None]
    trial_stream: object = None
    write_s: float = DEFAULT_WRITE_S  # seconds per byte a checkpoint takes to write where the final run goes
    slowdown: float = 1.0  # how much slower than estimated the steps so far ran (>= 1): later estimates grow by it

    def resolve(self, spec: dict):
        return resolve_spec(spec, self.registry, Path.cwd(), "tlzoo train")

    def images(self, correct: float) -> str:
        return f"{count_text(correct)} of {self.sizes.val}"

    def scaled(self, estimate: float) -> float:
        return estimate * self.slowdown

    def observe(self, estimate: float, seconds: float) -> None:
        """A step took `seconds` against its unscaled `estimate`: a machine busier than when it was measured
        makes the rest slower too. Faster than estimated (a warm cache) changes nothing, so warm and cold
        runs choose alike; the factor is capped, one odd step must not starve the search."""
        if estimate > 0:
            self.slowdown = min(MAX_SLOWDOWN, max(self.slowdown, seconds / estimate))


@dataclass
class Choice:
    backbone: str
    recipe: Recipe
    correct: float  # validation images right, as the search measured the choice (a head: the sweep's mean)
    speed: Speed
    final_s: float  # the final run's estimate
    finish_s: float  # of which the end (test split, report)
    val_loss: float = float("inf")  # at the best epoch, as measured (the sweep's for a head)
    trial_dir: Path | None = None  # a fine-tune's trial run, whose epochs the final run takes over
    cut_at: int | None = None  # the epoch after which the budget stopped that trial
    kept_epoch: int | None = None  # the trial's best epoch, the one its final run keeps
    tune: FinetuneSpeed | None = None  # a fine-tune's measured speeds

    def beaten_by(self, correct: float, val_loss: float) -> bool:
        """Whether a fine-tune trial with these validation figures replaces this choice (module docstring)."""
        if self.recipe.groups == 0:
            return correct >= self.correct - 1
        return correct > self.correct or (correct == self.correct and val_loss < self.val_loss)

    def margin(self, correct: float, val_loss: float) -> str:
        than = f"{self.backbone}, {self.recipe.describe()}"
        if correct != self.correct:
            more = correct - self.correct
            return (f"{count_text(more)} image(s) better than {than}" if more > 0 else
                    f"{count_text(-more)} image(s) below {than}, within the noise: a fine-tune is preferred")
        if self.recipe.groups == 0:
            return f"as good as {than}: a fine-tune is preferred"
        return f"as many images as {than}, at a lower validation loss ({val_loss:.3f} against {self.val_loss:.3f})"


def choose_head(search: Search, speed: Speed, features, probe_correct: int) -> tuple[Recipe, float, float]:
    """The head's learning rate and epochs by the sweep; the demo's, scored by the probe, when the budget cannot
    pay for the sweep and the final run after it."""
    seeds = seeds_for(search.sizes.train)
    raw = estimates.head_sweep_s(search.sizes, seeds)
    estimate = search.scaled(raw)
    reserve = search.scaled(estimates.final_head_s(speed, search.sizes, HEAD_EPOCHS))
    if not search.budget.affords(estimate, reserve):
        recipe = Recipe(0, DEFAULT_LR, HEAD_EPOCHS)
        search.decisions.add(Row("head sweep", f"{speed.backbone}, {recipe.describe()}", None, None, True,
                                 f"not swept: the sweep needs about {estimate:.0f} s; the demo's setting is kept, "
                                 "its score the probe's", estimate))
        search.log(f"head: {recipe.describe()} (the budget cannot pay for the sweep, about {estimate:.0f} s)")
        return recipe, probe_correct, float("inf")
    search.budget.charge(estimate)
    started = search.budget.elapsed()
    spec = search.base["train"]
    sweep = sweep_head(features, spec["seed"], LABEL_SMOOTHING, WEIGHT_DECAY, BATCH_SIZE, repeats=seeds)
    seconds = search.budget.elapsed() - started
    search.observe(raw, seconds)
    point = sweep.chosen
    recipe = Recipe(0, point.lr, point.epochs)
    search.decisions.add(Row("head sweep", f"{speed.backbone}, {recipe.describe()}", point.val_top1, seconds, True,
                             f"{sweep.reason}; {len(sweep.points)} settings of lr and epochs on the cached features",
                             estimate))
    search.log(f"head: {recipe.describe()}: val top-1 {point.val_top1:.4f} "
               f"({point.describe(search.sizes.val)}), {seconds:.1f} s")
    return recipe, point.correct, point.val_loss


def choose_recipe(search: Search, head: Choice) -> Choice:
    """`head` (head_choice), or the top groups of its backbone fine-tuned: each fine-tune trial is a real run,
    kept when it wins."""
    best, speed = head, head.speed
    epochs = finetune_epochs(search.sizes.train)
    for groups in FINETUNE_GROUPS:
        if groups >= speed.groups:
            break
        recipe = Recipe(groups, FINETUNE_LR, epochs)
        outcome = finetune_trial(search, speed, recipe, best, first=groups == FINETUNE_GROUPS[0])
        if outcome is None or outcome is best:
            break
        best = outcome
    return best


def head_choice(search: Search, speed: Speed, head: Recipe, head_correct: float,
                head_loss: float = float("inf")) -> Choice:
    """The head the sweep chose, as the choice a fine-tune must beat."""
    sizes = search.sizes
    # what follows the last epoch: calibration, the refit on a small split, test split, report
    finish = estimates.finish_s(speed, sizes) + estimates.refit_s(speed, sizes, head.epochs)
    return Choice(speed.backbone, head, head_correct, speed, estimates.final_head_s(speed, sizes, head.epochs),
                  finish + estimates.trust_s(speed, sizes, False), head_loss)


def try_other_backbones(search: Search, probed, best: Choice) -> Choice:
    """A top-2 fine-tune trial of each other probed backbone the budget pays for, best probe first."""
    others = sorted((item for item in probed if item[0].backbone != best.backbone),
                    key=lambda item: (-item[2], estimates.probe_s(item[0], search.sizes), item[0].backbone))
    recipe = Recipe(FINETUNE_GROUPS[0], FINETUNE_LR, finetune_epochs(search.sizes.train))
    for speed, _, _ in others:
        if recipe.groups >= speed.groups:
            continue
        best = finetune_trial(search, speed, recipe, best, first=False) or best  # None: a cheaper one may fit
    return best


def finetune_trial(search: Search, speed: Speed, recipe: Recipe, best: Choice, first: bool) -> Choice | None:
    """Measure and run one fine-tune trial: the new best Choice, `best` when the trial lost, None when the budget
    could not pay for it (a row says why; `first`: the note says no fine-tune was affordable at all)."""
    sizes = search.sizes
    name = f"{speed.backbone}, {recipe.describe()}"
    # measuring a fine-tune builds the model and times 3 prefix passes and 3 steps of 32: about twice this
    measuring = search.scaled(2 * (speed.build_s + 3 * BATCH * speed.forward_s))
    if not search.budget.affords(measuring, search.scaled(best.final_s)):
        search.decisions.add(Row("fine-tune trial", name, None, None, False,
                                 f"not measured: {max(0.0, search.budget.available()):.0f} s were left, the final "
                                 f"run needs about {search.scaled(best.final_s):.0f} s", measuring))
        if first:
            search.decisions.notes.append("The budget could not pay for a fine-tune, so the head was trained "
                                          "on the frozen backbone.")
            search.log("the budget cannot pay for a fine-tune: training the head")
        return None
    resolved = search.resolve(trial_spec(search, speed.backbone, recipe))
    search.budget.charge(measuring)
    tune = measure_finetune(resolved, search.data, recipe.groups)
    raw_trial = estimates.finetune_trial_s(speed, tune, sizes, recipe.epochs)
    trial_s, final_s = search.scaled(raw_trial), estimates.final_finetune_s(speed, tune, sizes, recipe.epochs)
    reserve = search.scaled(max(final_s, best.final_s))
    # the trial's deadline stops it after any epoch that leaves too little for the final run, so a trial may start
    # when its prefix pass and one epoch fit: on a large set one epoch is a few hundred steps
    shortest = search.scaled(estimates.finetune_trial_s(speed, tune, sizes, 1))
    if not search.budget.affords(shortest, reserve):
        final_s = search.scaled(final_s)
        search.decisions.add(Row("fine-tune trial", name, None, None, False,
                                 f"not tried: its trial needs about {trial_s:.0f} s and its final run about "
                                 f"{final_s:.0f} s; {max(0.0, search.budget.available()):.0f} s were left", trial_s))
        if first:
            search.decisions.notes.append(f"The budget could not pay for a fine-tune (top {recipe.groups} groups: "
                                          f"about {trial_s + final_s:.0f} s for its trial and final run), so "
                                          "the head was trained on the frozen backbone.")
            search.log(f"the budget cannot pay for a fine-tune (about {trial_s + final_s:.0f} s): training "
                       "the head")
        return None
    planned = min(trial_s, search.budget.available() - reserve)  # what the deadline lets it run
    search.budget.charge(planned)
    search.log(f"fine-tune trial: {name} (about {trial_s:.0f} s" + (
        f"; the budget pays for about {planned:.0f} s of it, the deadline stops it after the epoch that fits)"
        if planned < trial_s else ")"))
    started = search.budget.elapsed()
    trial_dir = search.scratch / f"trial-{speed.backbone}-top{recipe.groups}"
    result = run_trial(search, resolved, trial_dir, reserve)
    seconds = search.budget.elapsed() - started
    search.observe(raw_trial * planned / trial_s, seconds)
    measured = result.summary.get("best") or {}
    best_val = measured.get("val_top1")
    val_loss = measured.get("val_loss")
    val_loss = float("inf") if val_loss is None else val_loss
    correct = -1 if best_val is None else round(best_val * sizes.val)
    cut = " (cut short by the budget)" if result.summary.get("stopped_early") else ""
    row = search.decisions.add(Row("fine-tune trial", name, best_val, seconds, False, "", trial_s))
    search.log(f"{name}: val top-1 {best_val if best_val is not None else float('nan'):.4f} "
               f"({search.images(correct)}), {seconds:.1f} s{cut}")
    if correct >= 0 and best.beaten_by(correct, val_loss):
        row.kept, row.reason = True, best.margin(correct, val_loss) + cut
        discard(best.trial_dir)
        return Choice(speed.backbone, recipe, correct, speed, final_s, final_s, val_loss, trial_dir,
                      result.summary.get("epochs_run") if cut else None, result.summary.get("best_epoch"), tune)
    row.reason = f"not kept: {best.recipe.describe()} of {best.backbone} validated {search.images(best.correct)}" + (
        f" at loss {best.val_loss:.3f} against {val_loss:.3f}" if correct == best.correct else "")
    discard(trial_dir)
    return best


def discard(trial_dir: Path | None) -> None:
    """A trial that is no longer the best: its checkpoints go at once (a few of them fill a small disk)."""
    if trial_dir is not None:
        shutil.rmtree(trial_dir, ignore_errors=True)


def trial_spec(search: Search, backbone: str, recipe: Recipe) -> dict:
    """A candidate as a trial: no report, and no calibration or unknown threshold, which the final run fits for
    itself (both are fitted after training, so a resume or take-over may change them: tlzoo.rundir.resume's
    FREE_FIELDS); a fine-tune's would cost a pass over its training images."""
    spec = candidate_spec(search.base, backbone, recipe)
    spec["report"] = {"enabled": False}
    spec["train"]["calibration"], spec["train"]["unknown"] = "none", "none"
    spec["output"] = str(search.scratch)
    return spec


def run_trial(search: Search, resolved, run_dir: Path, reserve: float, data=None, hooks=()):
    """A trial as an ordinary run in the scratch folder, on the data already scanned (or `data`, another split
    of it); cut short when an epoch more would leave less than `reserve` seconds for the final run."""
    from tlzoo.auto.deadline import DeadlineHook

    hook = DeadlineHook(search.budget, reserve, search.log, "trial")
    extras = RunExtras(data=search.data if data is None else data, epoch_hooks=[hook, *hooks])
    return run_spec(resolved, run_dir, stream=search.trial_stream or sys.stderr, extras=extras)


def final_spec(search: Search, choice: Choice, reader: dict, output: str) -> dict:
    """The chosen candidate as an ordinary run with the test split; on a small validation split its kept epoch
    trains again on train and val together (recipes.refits)."""
    spec = candidate_spec(search.base, choice.backbone, choice.recipe)
    spec["data"]["reader"] = copy.deepcopy(reader)
    spec["output"] = output
    if refits(search.sizes.val):
        spec["train"]["refit"] = True
    return spec
