"""The head sweep of `tlzoo train`: seeds trained side by side, scored by their mean, and its place in the budget."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tlzoo.auto import estimates, head_sweep
from tlzoo.auto.head_sweep import seeds_for, sweep_head, train_head
from tlzoo.auto.recipes import Recipe, base_spec, candidate_spec
from tlzoo.auto.search import choose_head

from auto_fakes import FakeClock, make_search, speed


def blobs(seed: int, classes: int, per_class: int, width: int, spread: float):
    """Gaussian blobs around random class centres: `spread` sets how much the classes overlap."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, width, generator=generator)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return centres[labels] + spread * torch.randn(labels.numel(), width, generator=generator), labels


def features(seed: int, classes: int, train: int, val: int, width: int = 32, spread: float = 1.0):
    train_x, train_y = blobs(seed, classes, train, width, spread)
    val_x, val_y = blobs(seed, classes, val, width, spread)  # same centres: the same seed draws them first
    return SimpleNamespace(train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, num_classes=classes)


def one_head(train_x, train_y, val_x, val_y, weight, bias, orders, lr, epochs):
    """What the engine's head-only run does with one linear head: the reference for the stacked seeds."""
    weight, bias = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    optimizer = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=1e-4)
    steps = -(-train_x.shape[0] // 8)
    total, step, first_top1 = epochs * steps, 0, (-1, None)
    for epoch in range(epochs):
        for start in range(0, steps * 8, 8):
            rows = orders[epoch][start:start + 8]
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * step / total))).item()
            loss = F.cross_entropy(train_x[rows] @ weight + bias, train_y[rows], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
        with torch.no_grad():
            logits = val_x @ weight + bias
            correct, loss = int((logits.argmax(1) == val_y).sum()), float(F.cross_entropy(logits, val_y))
            if correct > first_top1[0]:  # what the engine's default (keep the best by val_top1) would keep
                first_top1 = (correct, loss)
    return (correct, loss), first_top1  # a head-only run of tlzoo train keeps its last epoch


def test_stacked_seeds_train_as_separate_heads_would():
    data = features(0, classes=4, train=10, val=10, spread=2.0)
    point = train_head(data.train_x, data.train_y, data.val_x, data.val_y, 4, lr=1e-2, epochs=6, seed=3,
                       label_smoothing=0.1, weight_decay=1e-4, batch_size=8, repeats=3)
    generator = torch.Generator().manual_seed(3)  # the sweep's draws, in its order
    bound = 1 / 32 ** 0.5
    weight = torch.empty(3, 32, 4).uniform_(-bound, bound, generator=generator)
    bias = torch.empty(3, 1, 4).uniform_(-bound, bound, generator=generator)
    orders = [[torch.randperm(40, generator=generator) for _ in range(3)] for _ in range(6)]
    alone = [one_head(data.train_x, data.train_y, data.val_x, data.val_y, weight[seed], bias[seed, 0],
                      [epoch[seed] for epoch in orders], 1e-2, 6) for seed in range(3)]
    counts = [kept[0] for kept, _ in alone]
    assert point.seeds == 3 and len(set(counts)) > 1  # the seeds differ: the test compares something
    assert any(kept != top1 for kept, top1 in alone)  # and the two rules of keeping an epoch differ here
    assert point.correct == pytest.approx(sum(counts) / 3)
    assert (point.lowest, point.highest) == (min(counts), max(counts))
    assert point.val_loss == pytest.approx(sum(kept[1] for kept, _ in alone) / 3, rel=1e-4)
    assert point.val_top1 == pytest.approx(point.correct / 40)


def test_the_demo_setting_stays_unless_another_validates_better_by_more_than_one_image():
    easy = features(1, classes=4, train=100, val=10, spread=0.1)  # the demo's setting gets every image
    sweep = sweep_head(easy, 0, 0.1, 1e-4, 32)
    assert len(sweep.points) == len(head_sweep.LRS) * len(head_sweep.EPOCHS)
    assert min(point.correct for point in sweep.points) < 40  # a shorter, slower setting is worse: a real sweep
    assert (sweep.chosen.lr, sweep.chosen.epochs) == head_sweep.DEFAULT
    assert sweep.reason.startswith("the demo's lr 0.003 and 10 epochs, 40.0 of 40 on average over 5 seeds (40-40)")

    hard = features(2, classes=8, train=10, val=30, width=64, spread=3.0)  # overlapping: the longer sweeps win
    sweep = sweep_head(hard, 0, 0.1, 1e-4, 32)
    default = next(p for p in sweep.points if (p.lr, p.epochs) == head_sweep.DEFAULT)
    assert sweep.chosen.correct > default.correct + 1
    assert sweep.chosen.correct == max(point.correct for point in sweep.points)
    assert "more than the demo's setting" in sweep.reason
    assert sweep_head(hard, 0, 0.1, 1e-4, 32).chosen == sweep.chosen  # seeded: the same choice again


def test_larger_training_sets_get_fewer_seeds():
    assert [seeds_for(n) for n in (80, 1000, 1001, 2500, 5000, 50_000)] == [5, 5, 4, 2, 1, 1]
    small, large = estimates.Sizes(80, 40, 0, 8), estimates.Sizes(10_000, 2500, 0, 50)
    assert estimates.head_sweep_s(large, 1) < estimates.head_sweep_s(large, 5)
    assert estimates.head_sweep_s(small, 5) < 5 < estimates.head_sweep_s(large, 1)


def test_a_sweep_the_budget_cannot_pay_for_keeps_the_demo_setting_and_says_why(tmp_path):
    clock = FakeClock()
    sizes = estimates.Sizes(10_000, 2500, 0, 4)
    search = make_search(clock, 200, tmp_path, sizes)
    fast = speed("fast", 0.001)
    reserve = estimates.final_head_s(fast, sizes, 10)
    clock.advance(200 - reserve - estimates.head_sweep_s(sizes, 1) / 2)  # half the sweep's time is left
    untouched = SimpleNamespace()  # no features are read: the sweep does not start
    recipe, correct, loss = choose_head(search, fast, untouched, probe_correct=2000)
    assert (recipe.lr, recipe.epochs, recipe.groups) == (3e-3, 10, 0) and correct == 2000 and loss == float("inf")
    row = search.decisions.rows[-1]
    assert row.step == "head sweep" and row.seconds is None and row.reason.startswith("not swept:")


def test_a_sweep_is_charged_and_scored_by_its_mean(tmp_path):
    clock = FakeClock()
    data = features(3, classes=4, train=10, val=5)
    search = make_search(clock, 600, tmp_path, estimates.Sizes(40, 20, 0, 4))
    before = search.budget.planned_left()
    recipe, correct, loss = choose_head(search, speed("fast", 0.001), data, probe_correct=10)
    assert search.budget.planned_left() == pytest.approx(before - estimates.head_sweep_s(search.sizes, 5))
    row = search.decisions.rows[-1]
    assert row.kept and row.val_top1 == pytest.approx(correct / 20) and "on average over 5 seeds" in row.reason
    assert recipe.groups == 0 and loss < float("inf")


def test_a_head_keeps_its_last_epoch_and_a_fine_tune_its_best_top1():
    base = base_spec("photos", {"name": "imagefolder", "options": {"root": "photos"}}, 0, "runs")
    head = candidate_spec(base, "efficientnet_lite0", Recipe(0, 3e-3, 10))["train"]
    tuned = candidate_spec(base, "efficientnet_lite0", Recipe(2, 3e-3, 8))["train"]
    assert head["keep"] == "last" and head["strategy"] == "head_only"
    assert tuned.get("keep", "best") == "best" and tuned["strategy"]["options"] == {"groups": 2}
