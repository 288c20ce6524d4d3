"""The search of `tlzoo train` with a fake clock: what is probed, what is skipped and why, the fine-tune trials."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from auto_fakes import FakeClock, make_search, speed
from tlzoo.auto import estimates, probing, search as search_module
from tlzoo.auto.probing import choose_backbone, probe_candidates
from tlzoo.auto.search import Search
from tlzoo.auto.timing import check_one_pass
from tlzoo.errors import TlzooError


def fake_probing(monkeypatch, clock: FakeClock, correct: dict[str, int], cost: dict[str, float]):
    """pooled_features takes `cost` seconds on the fake clock; the probe scores `correct` of 20."""
    def features(resolved, data, log):
        clock.advance(cost[resolved])
        return SimpleNamespace(train_x=torch.zeros(2, 2), train_y=torch.zeros(2), val_x=torch.zeros(2, 2),
                               val_y=torch.zeros(2), num_classes=4, cached=False, name=resolved)

    def probe(train_x, train_y, val_x, val_y, num_classes):
        return SimpleNamespace(top1=correct[features.last] / 20, l2=0.01)

    def resolve(self, spec):
        features.last = spec["backbone"]["name"]
        return features.last

    monkeypatch.setattr(probing, "pooled_features", features)
    monkeypatch.setattr(probing, "linear_probe", probe)
    monkeypatch.setattr(Search, "resolve", resolve)


def test_a_candidate_the_budget_cannot_pay_for_is_not_probed_and_says_why(monkeypatch, tmp_path):
    clock = FakeClock()
    fast, slow = speed("fast", 0.05), speed("slow", 1.0)  # one pass over 100 images: 5 s against 100 s
    search = make_search(clock, 100, tmp_path)
    fake_probing(monkeypatch, clock, {"fast": 18, "slow": 20}, {"fast": 5, "slow": 100})
    probed = probe_candidates(search, [slow, fast])
    assert [item[0].backbone for item in probed] == ["fast"]  # cheapest first; the slow one never started
    rows = {row.candidate: row for row in search.decisions.rows}
    assert rows["slow"].seconds is None and rows["slow"].estimate_s == pytest.approx(
        estimates.probe_s(slow, search.sizes))
    assert rows["slow"].reason.startswith("not probed: its features and probe need about")
    assert rows["slow"].reason.endswith("final run")  # what the time was kept for


def test_choices_do_not_depend_on_a_warm_cache(monkeypatch, tmp_path):
    """The second of two identical commands reads its features from the cache (0 s on the clock): the plan
    still charges the estimates, so it skips what the cold first run skipped."""
    made = []
    for cost in (None, 0.0):
        clock = FakeClock()
        a, b, c = speed("a", 0.05), speed("b", 0.15), speed("c", 0.4)
        costs = {s.backbone: estimates.probe_s(s, estimates.Sizes(80, 20, 0, 4)) if cost is None else cost
                 for s in (a, b, c)}
        search = make_search(clock, 190, tmp_path)  # pays for a, b and a fine-tune of b to start, not for c
        fake_probing(monkeypatch, clock, {"a": 18, "b": 19, "c": 20}, costs)
        made.append([item[0].backbone for item in probe_candidates(search, [a, b, c])])
    assert made[0] == made[1] == ["a", "b"]


def test_the_probe_fits_on_a_stratified_seeded_subset_of_a_large_training_split():
    labels = torch.cat([torch.full((3000,), 0), torch.full((900,), 1), torch.full((100,), 2)])[torch.randperm(4000)]
    rows = probing.probe_rows(labels, 2000, seed=0)
    assert torch.equal(rows, rows.unique())  # sorted, no row twice
    assert [int((labels[rows] == c).sum()) for c in range(3)] == [1500, 450, 50]  # each class keeps its share
    assert torch.equal(rows, probing.probe_rows(labels, 2000, seed=0))
    assert not torch.equal(rows, probing.probe_rows(labels, 2000, seed=1))
    assert torch.equal(probing.probe_rows(labels[:1500], 2000, seed=0), torch.arange(1500))
    rare = torch.cat([torch.zeros(3999), torch.ones(1)])
    assert int(rare[probing.probe_rows(rare, 100, seed=0)].sum()) == 1  # a class of one keeps its row


def test_a_large_split_is_probed_on_probe_rows_and_the_estimate_counts_them(monkeypatch, tmp_path):
    clock = FakeClock()
    search = make_search(clock, 3600, tmp_path, sizes=estimates.Sizes(5000, 100, 0, 4))
    fitted = []

    def features(resolved, data, log):
        return SimpleNamespace(train_x=torch.randn(5000, 16), train_y=torch.arange(5000) % 4,
                               val_x=torch.zeros(100, 16), val_y=torch.zeros(100), num_classes=4, cached=False)

    def probe(train_x, train_y, val_x, val_y, num_classes):
        fitted.append(len(train_x))
        return SimpleNamespace(top1=0.5, l2=0.01)

    monkeypatch.setattr(probing, "pooled_features", features)
    monkeypatch.setattr(probing, "linear_probe", probe)
    monkeypatch.setattr(Search, "resolve", lambda self, spec: spec)
    probe_candidates(search, [speed("fast", 0.01)])
    assert fitted == [estimates.PROBE_ROWS]
    assert "fitted on a stratified 2000 of the 5000 training images" in search.decisions.rows[0].reason
    fast = speed("fast", 0.01)
    fit = estimates.probe_s(fast, estimates.Sizes(5000, 100, 0, 4)) - fast.features_s(5100)
    assert fit == pytest.approx(estimates.probe_s(fast, estimates.Sizes(2000, 100, 0, 4)) - fast.features_s(2100))
    # the fit grows faster than its rows (measured: 2.8e-6 s per row x feature at 500 rows, 7.5e-6 at 4,000)
    assert estimates.probe_fit_s(4000, 1280) > max(30.0, 2.5 * estimates.probe_fit_s(2000, 1280))


def test_a_further_probe_leaves_time_for_its_own_backbone_s_fine_tune_to_start(monkeypatch, tmp_path):
    """A probe pays only if its backbone, should it win, can still be fine-tuned (on large sets the fine-tune is
    what pays); when the budget cannot start a fine-tune of even the cheapest, a probe keeps only the final run's
    time, as before."""
    sizes = estimates.Sizes(1000, 200, 0, 4)  # a split large enough that the final run does not refit
    fast, slow = speed("fast", 0.05), speed("slow", 0.1)
    first, second = estimates.probe_s(fast, sizes), estimates.probe_s(slow, sizes)
    own, cheapest = estimates.finetune_start_s(slow, sizes), estimates.finetune_start_s(fast, sizes)
    head = estimates.final_head_s(slow, sizes, 10)
    assert own > cheapest > second + head + 2
    cases = ((second + own - 1, ["fast"]), (second + own + 0.01, ["fast", "slow"]),
             (cheapest - 1, ["fast", "slow"]))  # no fine-tune can start: the old reserve, the final run's
    for left, probed_names in cases:
        clock = FakeClock()
        search = make_search(clock, first + left, tmp_path, sizes=sizes)
        fake_probing(monkeypatch, clock, {"fast": 10, "slow": 12}, {"fast": first, "slow": second})
        probed = probe_candidates(search, [slow, fast])
        assert [item[0].backbone for item in probed] == probed_names, left
        rows = {row.candidate: row for row in search.decisions.rows}
        if probed_names == ["fast"]:
            assert rows["slow"].reason.endswith(f"after keeping {own:.0f} s for a top-2 fine-tune of slow, should "
                                                "it win, to start: its prefix pass, first epoch and final run")


def test_a_costlier_backbone_must_win_by_more_than_one_image(monkeypatch, tmp_path):
    clock = FakeClock()
    search = make_search(clock, 10_000, tmp_path)
    cheap, mid, dear = speed("cheap", 0.05), speed("mid", 0.1), speed("dear", 0.3)
    fake_probing(monkeypatch, clock, {"cheap": 17, "mid": 18, "dear": 20}, {"cheap": 1, "mid": 1, "dear": 1})
    chosen = choose_backbone(search, probe_candidates(search, [cheap, mid, dear]))
    assert chosen[0].backbone == "dear"  # 3 images better than cheap, 2 better than mid
    rows = {row.candidate: row for row in search.decisions.rows}
    assert rows["dear"].kept and "best probe" in rows["dear"].reason
    assert not rows["cheap"].kept and "3 image(s) below dear" in rows["cheap"].reason

    clock = FakeClock()
    search = make_search(clock, 10_000, tmp_path)
    fake_probing(monkeypatch, clock, {"cheap": 19, "mid": 18, "dear": 20}, {"cheap": 1, "mid": 1, "dear": 1})
    chosen = choose_backbone(search, probe_candidates(search, [cheap, mid, dear]))
    assert chosen[0].backbone == "cheap"  # dear is one image better at several times the cost
    rows = {row.candidate: row for row in search.decisions.rows}
    assert rows["cheap"].kept and "within one image of the best probe (dear" in rows["cheap"].reason
    assert "dropped: 1 image better than cheap at" in rows["dear"].reason


def test_a_budget_that_cannot_pay_for_one_pass_says_how_long_that_pass_needs(tmp_path):
    clock = FakeClock()
    search = make_search(clock, 60, tmp_path, estimates.Sizes(800, 200, 0, 4))
    with pytest.raises(TlzooError, match="cannot pay for one pass over the 1000 images") as caught:
        check_one_pass(search, [speed("slow", 0.5), speed("slower", 1.0)])
    need = estimates.probe_s(speed("slow", 0.5), search.sizes) + estimates.final_head_s(
        speed("slow", 0.5), search.sizes, 10)
    assert f"with slow, the fastest candidate, that pass and the final run need about {need:.0f} s" in str(caught.value)
    assert caught.value.hint.startswith("give --time ")
    check_one_pass(make_search(FakeClock(), 3600, tmp_path, estimates.Sizes(800, 200, 0, 4)), [speed("slow", 0.5)])


def test_no_fine_tune_is_measured_when_the_final_run_would_lose_its_time(monkeypatch, tmp_path):
    """Measuring a fine-tune costs a model build and a few passes: with the final run's time at stake, it is
    not started (a measurement that ate that time once left a head trained for one epoch)."""
    from tlzoo.auto.recipes import Recipe
    from tlzoo.auto.search import choose_recipe, head_choice

    def never(*args, **kwargs):
        raise AssertionError("a fine-tune was measured")

    monkeypatch.setattr(search_module, "measure_finetune", never)
    monkeypatch.setattr(Search, "resolve", lambda self, spec: spec)
    clock = FakeClock()
    search = make_search(clock, 100, tmp_path)
    fast = speed("fast", 0.05)
    head = Recipe(0, 3e-3, 10)
    clock.advance(100 - estimates.final_head_s(fast, search.sizes, 10) - 2)  # the final run and 2 s are left
    choice = choose_recipe(search, head_choice(search, fast, head, 18))
    assert choice.recipe == head
    row = search.decisions.rows[-1]
    assert row.step == "fine-tune trial" and row.reason.startswith("not measured:") and not row.kept
    assert any("could not pay for a fine-tune" in note for note in search.decisions.notes)


def fake_trials(monkeypatch, clock: FakeClock, scores: dict[tuple[str, int], tuple[int, float]]):
    """Fine-tune trials of (backbone, groups) validate scores[...] = (correct of 20, loss), 3 s each; returns the
    list of trials run, in order."""
    from tlzoo.auto.throughput import FinetuneSpeed

    ran = []
    monkeypatch.setattr(Search, "resolve", lambda self, spec: spec)
    monkeypatch.setattr(search_module, "measure_finetune",
                        lambda resolved, data, groups: FinetuneSpeed(groups, 0.01, 0.01, 0.01))

    def trial(search, spec, name, reserve):
        key = (spec["backbone"]["name"], spec["train"]["strategy"]["options"]["groups"])
        ran.append(key)
        clock.advance(3)
        correct, loss = scores[key]
        return SimpleNamespace(summary={"best": {"val_top1": correct / 20, "val_loss": loss}})

    monkeypatch.setattr(search_module, "run_trial", trial)
    return ran


def test_a_fine_tune_within_one_image_of_the_head_is_kept_and_other_backbones_get_a_trial(monkeypatch, tmp_path):
    from tlzoo.auto.recipes import Recipe
    from tlzoo.auto.search import choose_recipe, head_choice, try_other_backbones

    clock = FakeClock()
    search = make_search(clock, 10_000, tmp_path)
    a, b, c = speed("a", 0.05), speed("b", 0.1), speed("c", 0.2)
    ran = fake_trials(monkeypatch, clock, {("a", 2): (17, 0.30), ("b", 2): (17, 0.25), ("c", 2): (16, 0.10)})
    best = choose_recipe(search, head_choice(search, a, Recipe(0, 3e-3, 10), 18, 0.5))
    assert (best.backbone, best.recipe.groups) == ("a", 2)  # one image below the head: within the noise
    assert ran == [("a", 2)]  # a's top 3 is its whole backbone (3 groups): not a partial fine-tune
    probed = [(a, None, 18), (c, None, 15), (b, None, 16)]
    best = try_other_backbones(search, probed, best)
    assert ran == [("a", 2), ("b", 2), ("c", 2)]  # best probe first
    assert (best.backbone, best.correct) == ("b", 17)  # as many images as a's, at a lower loss; c has fewer
    rows = [row for row in search.decisions.rows if row.step == "fine-tune trial"]
    assert [row.kept for row in rows] == [True, True, False]
    assert "within the noise" in rows[0].reason and "lower validation loss" in rows[1].reason
    assert rows[2].reason.startswith("not kept:")

    clock = FakeClock()  # a head two images better than any fine-tune stays
    search = make_search(clock, 10_000, tmp_path)
    ran = fake_trials(monkeypatch, clock, {("a", 2): (16, 0.2), ("b", 2): (16, 0.1)})
    best = try_other_backbones(search, [(a, None, 18), (b, None, 16)],
                               choose_recipe(search, head_choice(search, a, Recipe(0, 3e-3, 10), 18, 0.5)))
    assert (best.backbone, best.recipe.groups) == ("a", 0) and ran == [("a", 2), ("b", 2)]


def test_a_fine_tune_trains_at_its_own_learning_rate_whatever_the_head_sweep_chose(monkeypatch, tmp_path):
    """The sweep's lr suits a head on cached features for many epochs; a fine-tune's few hundred steps take the
    fixed recipe's (a fine-tune tied to a swept 1e-3 scored 2.5 points less on 4,000 training images)."""
    from tlzoo.auto.recipes import FINETUNE_LR, Recipe
    from tlzoo.auto.search import choose_recipe, head_choice

    clock = FakeClock()
    search = make_search(clock, 10_000, tmp_path)
    fake_trials(monkeypatch, clock, {("a", 2): (19, 0.3)})
    trained = []
    run = search_module.run_trial
    monkeypatch.setattr(search_module, "run_trial", lambda search, spec, name, reserve: (
        trained.append(spec["train"]["optimizer"]["lr"]) or run(search, spec, name, reserve)))
    best = choose_recipe(search, head_choice(search, speed("a", 0.05), Recipe(0, 1e-3, 20), 15, 0.5))
    assert trained == [FINETUNE_LR] and FINETUNE_LR != 1e-3
    assert best.recipe == Recipe(2, FINETUNE_LR, best.recipe.epochs)


def test_other_backbones_are_tried_only_while_the_final_run_keeps_its_time(monkeypatch, tmp_path):
    from tlzoo.auto.recipes import Recipe
    from tlzoo.auto.search import choose_recipe, head_choice, try_other_backbones

    clock = FakeClock()
    search = make_search(clock, 100, tmp_path)
    a, b = speed("a", 0.05), speed("b", 0.1)
    ran = fake_trials(monkeypatch, clock, {("a", 2): (18, 0.3), ("b", 2): (20, 0.1)})
    best = choose_recipe(search, head_choice(search, a, Recipe(0, 3e-3, 10), 18, 0.5))
    clock.advance(search.budget.left() - best.final_s - 1)  # only the final run's time and 1 s are left
    best = try_other_backbones(search, [(a, None, 18), (b, None, 17)], best)
    assert ran == [("a", 2)] and best.backbone == "a"
    row = search.decisions.rows[-1]
    assert row.candidate.startswith("b, top 2 groups") and not row.kept and row.reason.startswith("not measured:")


def test_a_trial_starts_when_its_first_epoch_fits_and_its_deadline_keeps_the_final_run(monkeypatch, tmp_path):
    from tlzoo.auto.recipes import Recipe
    from tlzoo.auto.search import choose_recipe, head_choice
    from tlzoo.auto.throughput import FinetuneSpeed

    sizes = estimates.Sizes(1000, 100, 0, 4)
    fast = speed("fast", 0.05)
    tune = FinetuneSpeed(2, 0.05, 0.02, 0.02)
    whole, first_epoch = (estimates.finetune_trial_s(fast, tune, sizes, epochs) for epochs in (3, 1))
    final = max(estimates.final_finetune_s(fast, tune, sizes, 3), estimates.final_head_s(fast, sizes, 10))
    for left, tried in ((final + (whole + first_epoch) / 2, True), (final + first_epoch - 1, False)):
        clock = FakeClock()
        search = make_search(clock, 10_000, tmp_path, sizes=sizes)
        clock.advance(10_000 - left)
        search.budget.start_plan()
        monkeypatch.setattr(Search, "resolve", lambda self, spec: spec)
        monkeypatch.setattr(search_module, "measure_finetune", lambda resolved, data, groups: tune)
        reserves = []

        def trial(search, spec, name, reserve):
            reserves.append(reserve)
            clock.advance(first_epoch)  # what the deadline would let it train: one epoch
            return SimpleNamespace(summary={"best": {"val_top1": 0.9, "val_loss": 0.3}, "stopped_early": True,
                                            "epochs_run": 1})

        monkeypatch.setattr(search_module, "run_trial", trial)
        logged = []
        search.log = logged.append
        best = choose_recipe(search, head_choice(search, fast, Recipe(0, 3e-3, 10), 16, 0.5))
        assert bool(reserves) == tried
        if tried:
            assert reserves[0] == pytest.approx(final)  # the trial stops where the final run's time begins
            assert (best.recipe.groups, best.cut_at) == (2, 1)
            assert any("the deadline stops it after the epoch that fits" in line for line in logged)
        else:
            assert best.recipe.groups == 0 and search.decisions.rows[-1].reason.startswith("not tried:")
