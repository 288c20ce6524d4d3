"""Fakes the tests of `tlzoo train`'s search share: a clock the test moves, backbone speeds, a search on them."""

from __future__ import annotations

from types import SimpleNamespace

from tlzoo.auto import estimates
from tlzoo.auto.budget import Budget
from tlzoo.auto.decisions import Decisions
from tlzoo.auto.recipes import base_spec
from tlzoo.auto.search import Search
from tlzoo.auto.throughput import Speed


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def speed(name: str, forward_s: float) -> Speed:
    return Speed(name, build_s=1.0, forward_s=forward_s, load_s=0.0, parameters=1000, num_features=16, groups=3)


def make_search(clock: FakeClock, seconds: float, tmp_path, sizes=estimates.Sizes(80, 20, 0, 4)) -> Search:
    budget = Budget(seconds, clock)
    budget.start_plan()
    decisions = Decisions(seconds, 0, "data", {"cpu": "test"})
    base = base_spec("test", {"name": "imagefolder", "options": {}}, 0, "runs")
    return Search(budget, None, base, SimpleNamespace(classes=list("abcd")), sizes, 0.0, tmp_path, decisions,
                  lambda message: None)
