"""The fold check of `tlzoo train`: a fine-tune chosen on a small validation split, trained again against the head
on other splits of the training and validation images (tlzoo.auto.fold_check)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from auto_fakes import FakeClock, make_search, speed
from tlzoo.auto import estimates, fold_check
from tlzoo.auto.fold_check import CHECK_BELOW, FOLDS, check_finetune, fold_rows
from tlzoo.auto.recipes import Recipe
from tlzoo.auto.search import Choice, Search
from tlzoo.auto.throughput import FinetuneSpeed
from tlzoo.data.labelled import LabelledData


def test_each_fold_validates_on_a_stratified_share_of_the_training_rows_as_large_as_the_validation_split():
    train_y = [0] * 10 + [1] * 10 + [2] * 4  # class 2 has too few training rows for two folds of 3
    val_y = [0] * 5 + [1] * 5 + [2] * 3
    folds = fold_rows(train_y, val_y, 2, seed=0)
    assert len(folds) == 2
    held_out = set()
    for training, validation in folds:
        assert sorted(training + validation) == list(range(len(train_y) + len(val_y)))  # every row, once
        assert all(row < len(train_y) for row in validation)  # never the search's own validation images
        assert [sum(train_y[row] == c for row in validation) for c in range(3)] == [5, 5, 2]
        assert not held_out & set(validation)  # the folds validate on different images
        held_out |= set(validation)
    assert folds == fold_rows(train_y, val_y, 2, seed=0)
    assert folds != fold_rows(train_y, val_y, 2, seed=1)


def items(count: int, classes: int, split: str) -> list[tuple[Path, int]]:
    return [(Path(f"{split}/{n}.png"), n % classes) for n in range(count)]


def checked_search(tmp_path, seconds=10_000.0, val=20):
    clock = FakeClock()
    sizes = estimates.Sizes(40, val, 0, 4)
    search = make_search(clock, seconds, tmp_path, sizes=sizes)
    search.data = LabelledData(list("abcd"), items(40, 4, "train"), items(val, 4, "val"), [])
    features = SimpleNamespace(train_x=torch.randn(40, 8), train_y=torch.arange(40) % 4,
                               val_x=torch.randn(val, 8), val_y=torch.arange(val) % 4, num_classes=4)
    tune = FinetuneSpeed(2, 0.01, 0.01, 0.01)
    trial_dir = tmp_path / "trial-b-top2"
    trial_dir.mkdir(parents=True)
    fine = Choice("b", Recipe(2, 3e-3, 8), 19, speed("b", 0.1), 30.0, 30.0, 0.3, trial_dir, None, 5, tune)
    head = Choice("a", Recipe(0, 3e-3, 10), 17.4, speed("a", 0.05), 20.0, 10.0, 0.5)
    return clock, search, features, fine, head


def fake_folds(monkeypatch, clock, fine_top1: float, head_correct: float):
    """Each fold's fine-tune validates `fine_top1` at every epoch (3 s each); each fold's head `head_correct`."""
    ran = []
    monkeypatch.setattr(Search, "resolve", lambda self, spec: spec)

    def trial(search, spec, run_dir, reserve, data=None, hooks=()):
        state = SimpleNamespace(stopped_early=False)
        ran.append((spec["backbone"]["name"], [str(path) for path, _ in data.val]))
        for epoch in range(1, spec["train"]["epochs"] + 1):
            clock.advance(3)
            for hook in hooks:
                hook(SimpleNamespace(state=state), {"epoch": epoch, "val_top1": fine_top1})
            if state.stopped_early:
                ran[-1] += (epoch,)
                break

    heads = []

    def head(train_x, train_y, val_x, val_y, num_classes, lr, epochs, *args):
        heads.append((len(train_x), len(val_x), lr, epochs))
        return SimpleNamespace(correct=head_correct)

    monkeypatch.setattr(fold_check, "run_trial", trial)
    monkeypatch.setattr(fold_check, "train_head", head)
    return ran, heads


def test_the_head_is_chosen_when_it_validates_more_than_one_image_better_over_all_folds(monkeypatch, tmp_path):
    """The search's split counts as a fold: 19 + 16 + 16 right against the head's 17.4 + 18 + 18."""
    clock, search, features, fine, head = checked_search(tmp_path)
    ran, heads = fake_folds(monkeypatch, clock, fine_top1=0.8, head_correct=18.0)
    chosen = check_finetune(search, fine, head, features)
    assert chosen is head and not fine.trial_dir.exists()  # the trial the final run would have taken over goes
    assert [(name, stopped) for name, _, stopped in ran] == [("b", 5), ("b", 5)]  # stopped at the kept epoch
    assert all(name.startswith("train/") for _, validated, _ in ran for name in validated)
    assert heads == [(40, 20, 3e-3, 10)] * FOLDS  # the head's own recipe, on as many images as the search's
    row = search.decisions.rows[-1]
    assert row.step == "fold check" and not row.kept and row.val_top1 == pytest.approx(51 / 60)
    assert "the fine-tune 51 right (19 + 32 at its kept epoch 5)" in row.reason
    assert "53.4 (17.4 + 36) on average" in row.reason


def test_the_fine_tune_stays_within_one_image_of_the_head(monkeypatch, tmp_path):
    """The other folds alone would choose the head (32 against 34); the search's split, where the fine-tune was
    1.6 ahead, counts too: 51 against 51.4."""
    clock, search, features, fine, head = checked_search(tmp_path)
    fake_folds(monkeypatch, clock, fine_top1=0.8, head_correct=17.0)
    assert check_finetune(search, fine, head, features) is fine and fine.trial_dir.exists()
    row = search.decisions.rows[-1]
    assert row.kept and row.reason.endswith("the fine-tune stays")


def test_no_check_on_a_large_validation_split_nor_when_the_budget_cannot_pay_for_it(monkeypatch, tmp_path):
    clock, search, features, fine, head = checked_search(tmp_path, val=CHECK_BELOW)
    ran, _ = fake_folds(monkeypatch, clock, fine_top1=0.1, head_correct=CHECK_BELOW)
    assert check_finetune(search, fine, head, features) is fine and ran == [] and not search.decisions.rows

    clock, search, features, fine, head = checked_search(tmp_path / "small", seconds=40.0)
    ran, _ = fake_folds(monkeypatch, clock, fine_top1=0.1, head_correct=20)
    assert check_finetune(search, fine, head, features) is fine and ran == []
    row = search.decisions.rows[-1]
    assert row.kept and row.seconds is None and row.reason.startswith("not checked on other folds: it needs about")


def test_a_fold_the_budget_stops_before_the_kept_epoch_leaves_the_choice(monkeypatch, tmp_path):
    clock, search, features, fine, head = checked_search(tmp_path)
    monkeypatch.setattr(Search, "resolve", lambda self, spec: spec)
    monkeypatch.setattr(fold_check, "run_trial", lambda search, spec, run_dir, reserve, data=None, hooks=(): None)
    assert check_finetune(search, fine, head, features) is fine
    assert search.decisions.rows[-1].reason.startswith("not checked: the budget stopped fold 1 before epoch 5")


def test_a_fold_head_trains_on_the_fold_s_features():
    """Separable features: the head gets a fold's validation rows right, so it read the rows it was given."""
    torch.manual_seed(0)
    centres = torch.eye(4, 8) * 6
    train_y, val_y = torch.arange(40) % 4, torch.arange(20) % 4
    features = SimpleNamespace(train_x=centres[train_y] + 0.1 * torch.randn(40, 8), train_y=train_y,
                               val_x=centres[val_y] + 0.1 * torch.randn(20, 8), val_y=val_y, num_classes=4)
    head = Choice("a", Recipe(0, 1e-1, 20), 20, speed("a", 0.05), 20.0, 10.0)
    training, validation = fold_rows(train_y.tolist(), val_y.tolist(), 2, seed=0)[0]
    assert fold_check.fold_head(head, features, training, validation, seed=0) == pytest.approx(len(validation))
