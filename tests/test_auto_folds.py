"""Cross-validated scores of `tlzoo train` on a small validation split (tlzoo.auto.folds)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tlzoo.auto import estimates, search as search_module
from tlzoo.auto.folds import CV_BELOW_VAL, cross_validates, make_folds
from tlzoo.auto.head_sweep import fold_splits, score_head, sweep_head, train_head
from tlzoo.auto.search import trial_score
from tlzoo.data.labelled import LabelledData


def labelled(per_class_train=(7, 5, 4), per_class_val=(2, 2, 1)) -> LabelledData:
    train = [(Path(f"t{label}_{i}.png"), label) for label, count in enumerate(per_class_train) for i in range(count)]
    val = [(Path(f"v{label}_{i}.png"), label) for label, count in enumerate(per_class_val) for i in range(count)]
    return LabelledData(["a", "b", "c"], train, val, [])


def test_folds_are_stratified_seeded_and_hold_out_each_image_once():
    data = labelled()
    folds = make_folds(data, seed=3)
    pooled = data.train + data.val
    assert folds.images == len(pooled) == 21 and folds.count == 3
    assert sorted(Counter(folds.fold.tolist()).values()) == [7, 7, 7]
    for label in range(3):  # each class spread over the folds as evenly as its count allows
        per_fold = Counter(folds.fold[folds.labels == label].tolist())
        assert max(per_fold.values()) - min(per_fold.get(i, 0) for i in range(3)) <= 1
    assert torch.equal(make_folds(data, seed=3).fold, folds.fold)
    assert not torch.equal(make_folds(data, seed=4).fold, folds.fold)

    held = []
    for index in range(folds.count):
        part = folds.data(data, index)
        assert part.classes == data.classes and not set(part.train) & set(part.val)
        assert sorted(part.train + part.val) == sorted(pooled)
        held += part.val
    assert sorted(held) == sorted(pooled)


def test_cross_validation_is_for_small_validation_splits_only():
    def data(val: int):
        return SimpleNamespace(val=[None] * val)

    assert cross_validates(data(60)) and cross_validates(data(CV_BELOW_VAL - 1))
    assert not cross_validates(data(CV_BELOW_VAL)) and not cross_validates(data(0))


def separable_features(data: LabelledData, noise: float = 0.8):
    generator = torch.Generator().manual_seed(0)

    def rows(items):
        labels = torch.tensor([label for _, label in items])
        return torch.eye(8)[labels] * 2 + noise * torch.randn(len(items), 8, generator=generator), labels

    train_x, train_y = rows(data.train)
    val_x, val_y = rows(data.val)
    return SimpleNamespace(train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, num_classes=3)


def test_a_head_is_scored_on_every_pooled_image_once():
    data = labelled((20, 20, 20), (4, 4, 4))
    features = separable_features(data)
    folds = make_folds(data, seed=0)
    splits = fold_splits(features, folds)
    assert sum(split[3].numel() for split in splits) == 72
    summed = score_head(splits, 3, 1e-2, 5, 0, 0.1, 1e-4, 32)
    each = [train_head(*split, 3, 1e-2, 5, 0, 0.1, 1e-4, 32) for split in splits]
    assert summed.correct == sum(point.correct for point in each) and 0 < summed.correct <= 72
    assert summed.val_top1 == pytest.approx(summed.correct / 72)

    sweep = sweep_head(features, 0, 0.1, 1e-4, 32, lrs=(1e-3, 3e-3), epochs=(5, 10), folds=folds)
    assert all(point.correct <= 72 for point in sweep.points) and sweep.chosen in sweep.points
    single = sweep_head(features, 0, 0.1, 1e-4, 32, lrs=(1e-3, 3e-3), epochs=(5, 10))
    assert all(point.correct <= 12 for point in single.points)

    reordered = SimpleNamespace(**{**vars(features), "val_y": features.val_y.flip(0)})
    with pytest.raises(ValueError, match="not in the order"):
        folds.features(reordered, 0)


def test_a_trial_is_one_run_per_fold_scored_on_the_held_out_images(monkeypatch, tmp_path):
    data = labelled((20, 20, 20), (4, 4, 4))
    folds = make_folds(data, seed=0)
    search = SimpleNamespace(folds=folds, data=data, sizes=estimates.Sizes(60, 12, 0, 3), scored=72)
    runs = []

    def trial(search, resolved, name, reserve, fold_data=None):
        runs.append((name, len(fold_data.val)))
        right = len(fold_data.val) - len(runs)  # fold k misses k images
        return SimpleNamespace(summary={"best": {"val_top1": right / len(fold_data.val), "val_loss": 0.5}})

    monkeypatch.setattr(search_module, "run_trial", trial)
    correct, loss, cut = trial_score(search, "spec", "trial-x-top2", 99.0)
    assert [name for name, _ in runs] == ["trial-x-top2-fold1", "trial-x-top2-fold2", "trial-x-top2-fold3"]
    assert sum(size for _, size in runs) == 72
    assert (correct, loss, cut) == (72 - 1 - 2 - 3, pytest.approx(0.5), False)

    def unscored(search, resolved, name, reserve, fold_data=None):
        return SimpleNamespace(summary={"best": {}, "stopped_early": True})

    monkeypatch.setattr(search_module, "run_trial", unscored)
    assert trial_score(search, "spec", "trial-x-top2", 99.0)[0] == -1


def test_a_cross_validated_trial_pays_the_frozen_prefix_once():
    from tlzoo.auto.throughput import FinetuneSpeed, Speed

    speed = Speed("x", build_s=1.0, forward_s=0.05, load_s=0.001, parameters=1000, num_features=16, groups=5)
    sizes = estimates.Sizes(120, 60, 0, 12)
    slow_prefix, no_prefix = FinetuneSpeed(2, 0.04, 0.01, 0.005), FinetuneSpeed(2, 0.0, 0.01, 0.005)
    prefix = estimates.finetune_trial_s(speed, slow_prefix, sizes, 8) - estimates.finetune_trial_s(
        speed, no_prefix, sizes, 8)
    assert prefix == pytest.approx(180 * 0.04)
    one = estimates.finetune_trial_s(speed, slow_prefix, sizes, 8)
    assert estimates.finetune_trial_s(speed, slow_prefix, sizes, 8, runs=3) == pytest.approx(3 * one - 2 * (
        estimates.FOLD_S + 180 * (0.04 + 0.001)))
