"""A fine-tune chosen on a small validation split, checked against the head on other splits of the same images.

On a validation split of a few dozen images the search's choice of a fine-tune
carries a winner's curse: the head's score is a mean over seeds at its last
epoch, a fine-tune's is one seed's at its best epoch, and the best of up to five
trials is kept, so a fine-tune no better than the head validates a few images
above it (two few-shot flower draws, four training seeds each: a fine-tune
chosen every time, 58-60 of 60 against the head's 56-57, and 1.0-1.4 points
below the head on the test images; benchmarks/RESULTS.md, 2026-12-05 02:07).

So where the validation split has fewer than CHECK_BELOW images and the budget
pays for it, the chosen fine-tune and the head it replaced train again on FOLDS
other splits of the training and validation images. Each fold validates on a
stratified share of the training split, as many images of each class as the
validation split holds (so each fold trains on as many images as the search
did, and with the search's split the folds validate on every image once). The
fine-tune is scored at the epoch its trial kept, the head at its last epoch over
the sweep's seeds, as a final run of either keeps them. The search's own split
counts as one more fold, and the fine-tune stays unless the head validates better
by more than one image over all of them together (the search's rule, on three
times its images). Scored on the other folds alone, the check chose the head on
5 of 17 sets and lost 7.5 and 8 points of test top-1 on two of them, where the
fine-tune had validated 6-10 images ahead on the search's split and 100 other
images put the head 1.6 ahead by chance (benchmarks/RESULTS.md, 2026-12-05 11:25).
"""

from __future__ import annotations

import dataclasses
import shutil

import torch

from tlzoo.auto import estimates
from tlzoo.auto.decisions import Row
from tlzoo.auto.head_sweep import count_text, seeds_for, train_head
from tlzoo.auto.recipes import BATCH_SIZE, LABEL_SMOOTHING, WEIGHT_DECAY
from tlzoo.auto.search import Choice, Search, run_trial, trial_spec
from tlzoo.engine.refit import StopAfter
from tlzoo.runtime.device import one_thread

CHECK_BELOW = 200  # validation images under which a fine-tune's choice is checked on other folds
FOLDS = 2


class ScoreAt(StopAfter):
    """An epoch hook: the validation top-1 at `epoch` (1-based), after which training stops."""

    def __init__(self, epoch: int):
        super().__init__(epoch)
        self.val_top1: float | None = None

    def __call__(self, trainer, record: dict) -> None:
        if record.get("epoch") == self.epoch:
            self.val_top1 = record.get("val_top1")
        super().__call__(trainer, record)


def fold_rows(train_y: list[int], val_y: list[int], folds: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """(training rows, validation rows) of each fold, rows numbered over the training split, then the validation
    split. Fold k validates on the k-th share of each class's shuffled training rows, as many as that class has
    in the validation split (fewer where its training rows run short), and trains on all other rows."""
    generator = torch.Generator().manual_seed(seed)
    shuffled = {}
    for label in sorted(set(train_y)):
        rows = [row for row, y in enumerate(train_y) if y == label]
        shuffled[label] = [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
    every = range(len(train_y) + len(val_y))
    made = []
    for fold in range(folds):
        held = set()
        for label, rows in shuffled.items():
            share = min(val_y.count(label), len(rows) // folds)
            held.update(rows[fold * share:(fold + 1) * share])
        made.append(([row for row in every if row not in held], sorted(held)))
    return made


def check_finetune(search: Search, choice: Choice, head: Choice, features) -> Choice:
    """`choice`, or `head` when the folds say the head is better (module docstring); a row says which and why."""
    sizes = search.sizes
    if choice.recipe.groups == 0 or choice.kept_epoch is None or sizes.val >= CHECK_BELOW or features is None:
        return choice
    name = f"{choice.backbone}, {choice.recipe.describe()}"
    items = list(search.data.train) + list(search.data.val)
    labels = [label for _, label in items]
    folds = [fold for fold in fold_rows(labels[:sizes.train], labels[sizes.train:], FOLDS,
                                        search.base["train"]["seed"]) if fold[1]]
    if len(folds) < FOLDS:
        return choice
    fold_s = estimates.finetune_trial_s(choice.speed, choice.tune, sizes, choice.kept_epoch)
    raw = FOLDS * fold_s + estimates.head_sweep_s(sizes, seeds_for(sizes.train))
    estimate = search.scaled(raw)
    reserve = search.scaled(max(choice.final_s, head.final_s))
    if not search.budget.affords(estimate, reserve):
        search.decisions.add(Row("fold check", name, None, None, True,
                                 f"not checked on other folds: it needs about {estimate:.0f} s; "
                                 f"{max(0.0, search.budget.available() - reserve):.0f} s were left after keeping "
                                 f"{reserve:.0f} s for the final run", estimate))
        return choice
    search.budget.charge(estimate)
    search.log(f"checking {name} against the head on {FOLDS} other folds (about {estimate:.0f} s)")
    started = search.budget.elapsed()
    tuned, headed, images = int(choice.correct), head.correct, sizes.val  # the search's split: the first fold
    for number, (train_rows, val_rows) in enumerate(folds, start=1):
        fine = fold_finetune(search, choice, items, train_rows, val_rows, reserve, number)
        if fine is None:
            search.decisions.add(Row("fold check", name, None, search.budget.elapsed() - started, True,
                                     f"not checked: the budget stopped fold {number} before epoch "
                                     f"{choice.kept_epoch}, the one its trial kept", estimate))
            return choice
        tuned += fine
        headed += fold_head(head, features, train_rows, val_rows, search.base["train"]["seed"])
        images += len(val_rows)
    seconds = search.budget.elapsed() - started
    search.observe(raw, seconds)
    others = round(headed - head.correct, 1)
    scores = (f"over the search's split and {FOLDS} other folds ({images} validation images): the fine-tune "
              f"{tuned} right ({count_text(choice.correct)} + {tuned - int(choice.correct)} at its kept epoch "
              f"{choice.kept_epoch}), {head.backbone}, {head.recipe.describe()} {count_text(round(headed, 1))} "
              f"({count_text(head.correct)} + {count_text(others)}) on average over its seeds")
    keep = headed <= tuned + 1
    search.decisions.add(Row("fold check", name, tuned / images, seconds, keep, scores + (
        ": the fine-tune stays" if keep else ": the head, more than one image better, is chosen"), estimate))
    search.log(f"{scores}: " + ("kept" if keep else "the head is chosen"))
    if keep:
        return choice
    shutil.rmtree(choice.trial_dir, ignore_errors=True)
    return head


def fold_finetune(search: Search, choice: Choice, items, train_rows, val_rows, reserve: float,
                  number: int) -> int | None:
    """Validation images right at the trial's kept epoch, trained as its trial was on one fold; None when the
    budget stopped it before then."""
    data = dataclasses.replace(search.data, train=[items[row] for row in train_rows],
                               val=[items[row] for row in val_rows])
    spec = trial_spec(search, choice.backbone, choice.recipe)
    score = ScoreAt(choice.kept_epoch)
    run_dir = search.scratch / f"fold{number}-{choice.backbone}-top{choice.recipe.groups}"
    try:
        run_trial(search, search.resolve(spec), run_dir, reserve, data=data, hooks=[score])
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return None if score.val_top1 is None else round(score.val_top1 * len(val_rows))


def fold_head(head: Choice, features, train_rows, val_rows, seed: int) -> float:
    """Validation images right, on average over the sweep's seeds, of the head trained on one fold's features."""
    every_x = torch.cat([features.train_x, features.val_x]).float()
    every_y = torch.cat([features.train_y, features.val_y])
    train_at, val_at = torch.tensor(train_rows), torch.tensor(val_rows)
    with one_thread(), torch.enable_grad():
        point = train_head(every_x[train_at], every_y[train_at], every_x[val_at], every_y[val_at],
                           features.num_classes, head.recipe.lr, head.recipe.epochs, seed, LABEL_SMOOTHING,
                           WEIGHT_DECAY, BATCH_SIZE, seeds_for(len(train_rows)))
    return point.correct
