"""The budget of `tlzoo train` with a fake clock: durations, the two ledgers, the deadline."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from auto_fakes import FakeClock
from tlzoo.auto.budget import Budget, parse_duration, process_age
from tlzoo.auto.deadline import DeadlineHook
from tlzoo.errors import TlzooError


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400),
                                           ("600", 600), (45, 45), ("2 min", 120), ("30s", 30)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "10x", "", "5s", "-3m", "20s", 29])
def test_bad_durations_name_the_option(text):
    with pytest.raises(TlzooError, match="--time"):
        parse_duration(text)


def test_a_bare_number_too_small_for_seconds_is_asked_about_as_minutes():
    with pytest.raises(TlzooError, match="^--time 10: the budget must be between 30 s") as caught:
        parse_duration("10")
    assert caught.value.hint.startswith("a bare number counts seconds: --time 10m is 10 minutes")
    with pytest.raises(TlzooError, match="^time=10: the budget") as caught:
        parse_duration(10, "time")  # tlzoo.train(time=10): named as Python writes it
    assert caught.value.hint.startswith("a bare number counts seconds: time='10m' is 10 minutes")
    with pytest.raises(TlzooError) as caught:
        parse_duration("10s")
    assert not caught.value.hint.startswith("a bare number")
    with pytest.raises(TlzooError) as caught:
        parse_duration("0")  # "0m is 0 minutes" would be no help
    assert not caught.value.hint.startswith("a bare number")


def test_process_age_counts_the_time_before_the_call():
    assert 0 < process_age() < 24 * 3600  # this interpreter started a moment ago, not at boot


def test_budget_counts_what_was_spent_before_and_keeps_both_ledgers():
    clock = FakeClock()
    budget = Budget(100, clock, already=10)
    assert budget.elapsed() == 10 and budget.left() == 90
    budget.start_plan()
    assert budget.affords(80) and not budget.affords(80, reserve=11)
    budget.charge(60)  # a step that the plan expected to take 60 s
    clock.advance(5)  # ...took 5 s (its work came out of the cache)
    assert budget.left() == 85
    # the plan still counts 60 s: a warm second run affords exactly what the cold first one did
    assert budget.planned_left() == 30 and not budget.affords(31) and budget.affords(30)
    assert budget.available() == 30  # what the messages say was left: the tighter ledger
    clock.advance(70)  # a step that ran far over its estimate: the clock binds
    assert budget.left() == 15 and budget.available() == 15 and budget.shortfall(20) == 5 and not budget.affords(20)
    assert budget.status() == "1:25 of 1:40 used, 0:15 left"


@dataclass
class Trainer:
    epochs: int
    state: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(epoch=1, stopped_early=False,
                                                                           keep="best"))

    @property
    def config(self):
        return SimpleNamespace(epochs=self.epochs)


def test_deadline_stops_training_when_another_epoch_would_eat_the_reserve():
    clock, said = FakeClock(), []
    budget = Budget(100, clock)
    hook = DeadlineHook(budget, reserve=20, log=said.append)
    trainer = Trainer(epochs=5)
    clock.advance(50)
    hook(trainer, {"seconds": 25})  # 50 left: one more epoch of 25 leaves 25 >= 20
    assert not trainer.state.stopped_early
    trainer.state.epoch = 2
    clock.advance(10)
    hook(trainer, {"seconds": 25})  # 40 left: 25 more would leave 15 < 20
    assert trainer.state.stopped_early and hook.cut_at == 2
    assert "stopping after epoch 2 of 5" in said[-1] and "best epoch so far is kept" in said[-1]
    head = Trainer(epochs=5)  # a head-only run of tlzoo train keeps its last epoch: the message says so
    head.state.keep = "last"
    DeadlineHook(budget, reserve=20, log=said.append)(head, {"seconds": 25})
    assert head.state.stopped_early and said[-1].endswith("this epoch is kept")
    last = Trainer(epochs=2)
    last.state.epoch = 2
    DeadlineHook(budget, reserve=1000, log=said.append)(last, {"seconds": 25})  # the last epoch: nothing to stop
    assert not last.state.stopped_early
