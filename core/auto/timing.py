"""The search's first step: time every candidate backbone on this machine, and refuse a budget that cannot
pay for one pass over the data with the cheapest of them (after as few timings as that takes)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

from tlzoo.auto import estimates
from tlzoo.auto.budget import Budget
from tlzoo.auto.decisions import Decisions, Row
from tlzoo.auto.recipes import DEFAULT_LR, HEAD_EPOCHS, Recipe, candidate_spec
from tlzoo.auto.throughput import Speed, measure_speed, second_pass
from tlzoo.errors import TlzooError
from tlzoo.probe.ranking import unavailable


class Search(Protocol):
    """What timing reads from the search (search.py, which imports this module, so it is not imported back)."""
    budget: Budget
    decisions: Decisions
    base: dict
    data: Any
    sizes: estimates.Sizes
    load_s: float
    write_s: float
    log: Callable[[str], None]

    def resolve(self, spec: dict) -> Any: ...


def measure_candidates(search: Search, candidates, offline: bool) -> list[Speed]:
    measured = []  # (first speed, its timed call, seconds so far); the calls hold their models until the end
    for position, candidate in enumerate(candidates):
        started = search.budget.elapsed()
        if measured and not affords_measuring(search, measured, candidates[position:]):
            break
        reason = unavailable(candidate, search.base, offline)
        if reason is None:
            try:
                spec = candidate_spec(search.base, candidate.name, Recipe(0, DEFAULT_LR, HEAD_EPOCHS))
                speed, forward = measure_speed(search.resolve(spec), search.data, search.load_s)
            except TlzooError as exc:  # weights that cannot be had here, a backbone that does not build
                reason = str(exc).splitlines()[0]
        if reason is not None:
            search.decisions.add(Row("speed", candidate.name, None, None, False, f"not usable: {reason}"))
            search.log(f"{candidate.name}: skipped ({reason})")
            continue
        measured.append((speed, forward, search.budget.elapsed() - started))
    speeds = []
    for speed, forward, seconds in measured:  # every candidate again, once all had a first pass (throughput.py)
        started = search.budget.elapsed()
        speed = dataclasses.replace(second_pass(speed, forward), write_s=search.write_s)
        speeds.append(speed)
        pass_s = speed.features_s(search.sizes.searched)
        search.decisions.add(Row("speed", speed.backbone, None, seconds + search.budget.elapsed() - started, True,
                                 f"{1 / speed.forward_s:.0f} images/s through the backbone, so one pass over the "
                                 f"{search.sizes.searched} train and val images takes about {pass_s:.0f} s"))
        search.log(f"{speed.backbone}: {1 / speed.forward_s:.0f} images/s; one pass over the data about "
                   f"{pass_s:.0f} s")
    if not speeds:
        raise TlzooError("no candidate backbone can be used here (each is listed above with the reason)",
                         "tlzoo list backbones --offline shows the backbones whose weights are on this machine")
    return speeds


def affords_measuring(search: Search, measured, rest) -> bool:
    """Whether the next candidate can be timed (as long as the slowest timing so far) with the cheapest one
    measured still paid for: a tiny budget is refused after one timing, not after all of them. When not, each
    candidate of `rest` gets a row saying so."""
    took = max(seconds for _, _, seconds in measured)
    _, need = one_pass_need(search, [speed for speed, _, _ in measured])
    if search.budget.affords(took, need):
        return True
    left = max(0.0, search.budget.available())
    for candidate in rest:
        search.decisions.add(Row("speed", candidate.name, None, None, False,
                                 f"not timed: timing a backbone takes about {took:.0f} s here, and {left:.0f} s were "
                                 f"left after keeping {need:.0f} s for the cheapest one timed", took))
    search.log(f"{len(rest)} other candidate(s) not timed: each takes about {took:.0f} s, and {left:.0f} s are left")
    return False


def one_pass_need(search: Search, speeds: list[Speed]) -> tuple[Speed, float]:
    """The cheapest backbone, and the seconds its probe (one pass over the data) and final head run need."""
    cheapest = min(speeds, key=lambda s: estimates.probe_s(s, search.sizes))
    return cheapest, estimates.probe_s(cheapest, search.sizes) + estimates.final_head_s(cheapest, search.sizes,
                                                                                         HEAD_EPOCHS)


def check_one_pass(search: Search, speeds: list[Speed]) -> None:
    """Refuse a budget that cannot pay for even one pass over the data with the cheapest backbone."""
    cheapest, need = one_pass_need(search, speeds)
    if not search.budget.affords(need):
        spent = search.budget.elapsed()
        raise TlzooError(
            f"the budget of {search.budget.seconds:.0f} s cannot pay for one pass over the {search.sizes.searched} "
            f"images: with {cheapest.backbone}, the fastest candidate, that pass and the final run need about "
            f"{need:.0f} s on this machine, and {spent:.0f} s went to starting up, reading the data and timing "
            "the backbones",
            f"give --time {suggest_minutes(spent + need)} or more")


def suggest_minutes(seconds: float) -> str:
    return f"{max(1, -(-int(seconds * 1.2) // 60))}m"
