"""Timing the candidates of `tlzoo train` and the disk: repeats, second passes, tiny budgets, slow disks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from auto_fakes import FakeClock, make_search, speed
from tlzoo.auto import estimates, timing as timing_module
from tlzoo.auto.throughput import Speed
from tlzoo.auto.timing import check_one_pass
from tlzoo.errors import TlzooError


def test_speed_is_the_fastest_of_its_repeats_after_a_warm_up():
    import time

    from tlzoo.auto.throughput import SPEED_REPEATS, timed

    pauses = iter([0.2, 0.05, 0.05, 0.05, 0.0])  # warm-up, then three slow calls (a busy neighbour) and one quick

    def call():
        time.sleep(next(pauses))

    assert SPEED_REPEATS == 4 and timed(call, SPEED_REPEATS) < 0.04
    pauses = iter([0.2, 0.05, 0.05])
    assert timed(call, 2) >= 0.05  # two repeats can both land on the slow calls


def test_second_pass_keeps_the_faster_of_both_passes():
    import time

    from tlzoo.auto.throughput import BATCH, second_pass

    slow_first = Speed("a", build_s=1.0, forward_s=0.2 / BATCH, load_s=0.01)  # a first pass at a third of its speed
    calls = []

    def quick():
        calls.append(1)
        time.sleep(0.02)

    again = second_pass(slow_first, quick)
    assert len(calls) == 2  # already warm: no warm-up call, two timed
    assert 0.02 / BATCH <= again.forward_s < 0.1 / BATCH and again.build_s == 1.0 and again.backbone == "a"

    def slower():
        time.sleep(0.3)

    assert second_pass(slow_first, slower).forward_s == slow_first.forward_s  # a busier second pass changes nothing


def test_every_candidate_is_timed_again_after_all_had_a_first_pass(monkeypatch, tmp_path):
    search = make_search(FakeClock(), 600, tmp_path)
    monkeypatch.setattr(search, "resolve", lambda spec: spec["backbone"]["name"])
    monkeypatch.setattr(timing_module, "unavailable", lambda candidate, base, offline: None)
    events = []

    def first(name, data, load_s):
        events.append(("first", name))
        return speed(name, 0.03), name  # slow: a machine waking up

    def again(measured, forward):
        events.append(("second", forward))
        return speed(measured.backbone, 0.01)

    monkeypatch.setattr(timing_module, "measure_speed", first)
    monkeypatch.setattr(timing_module, "second_pass", again)
    speeds = timing_module.measure_candidates(search, [SimpleNamespace(name="a"), SimpleNamespace(name="b")], False)
    assert events == [("first", "a"), ("first", "b"), ("second", "a"), ("second", "b")]
    assert [s.forward_s for s in speeds] == [0.01, 0.01]
    assert [row.reason.split(" images/s")[0] for row in search.decisions.rows] == ["100", "100"]


def test_a_tiny_budget_stops_timing_candidates_once_the_cheapest_cannot_be_paid_for(monkeypatch, tmp_path):
    """A 10 s budget (--time 10, before such budgets were refused) ran 112 s timing three backbones before
    saying that it could not pay for one pass: now timing stops after the first, and says why for the others."""
    clock = FakeClock()
    search = make_search(clock, 10, tmp_path)
    monkeypatch.setattr(search, "resolve", lambda spec: spec["backbone"]["name"])
    monkeypatch.setattr(timing_module, "unavailable", lambda candidate, base, offline: None)
    timed = []

    def first(name, data, load_s):
        timed.append(name)
        clock.advance(8.0)
        return speed(name, 0.05), name

    monkeypatch.setattr(timing_module, "measure_speed", first)
    monkeypatch.setattr(timing_module, "second_pass", lambda measured, forward: measured)
    names = [SimpleNamespace(name=name) for name in ("a", "b", "c")]
    speeds = timing_module.measure_candidates(search, names, False)
    assert timed == ["a"] and [s.backbone for s in speeds] == ["a"]
    rows = {row.candidate: row for row in search.decisions.rows}
    assert rows["b"].reason.startswith("not timed: timing a backbone takes about 8 s here") and not rows["c"].kept
    with pytest.raises(TlzooError, match="cannot pay for one pass"):
        check_one_pass(search, speeds)

    clock = FakeClock()
    timed.clear()
    search = make_search(clock, 600, tmp_path)
    monkeypatch.setattr(search, "resolve", lambda spec: spec["backbone"]["name"])
    assert len(timing_module.measure_candidates(search, names, False)) == 3 and timed == ["a", "b", "c"]


def test_a_gpu_timing_waits_for_the_queued_kernels(monkeypatch):
    """A GPU returns from a launch before the work is done: the clock must stop after torch.cuda.synchronize."""
    from tlzoo.runtime.device import synchronize

    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    synchronize(torch.device("cpu"))
    assert waited == []
    synchronize(torch.device("cuda", 0))
    assert waited == [torch.device("cuda", 0)]


def test_the_disk_is_timed_where_the_run_goes_and_left_clean(tmp_path):
    from tlzoo.auto.throughput import measure_writes

    target = tmp_path / "runs" / "not-yet"  # the run folder does not exist yet: its nearest parent is timed
    write_s = measure_writes(target, "--output", "hint")
    assert 0 < write_s < 1e-5  # some real speed: 16 MiB in under 170 s
    assert list(tmp_path.iterdir()) == [] and not target.exists()  # nothing left, nothing created


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be made")
def test_a_place_that_cannot_be_written_fails_before_the_search():
    from tlzoo.auto.throughput import measure_writes

    with pytest.raises(TlzooError) as caught:
        measure_writes(Path("/proc/tlzoo-run"), "--output", "pass an --output you can write")
    assert caught.value.message.startswith("cannot write where the run goes, --output (/proc): ")
    assert caught.value.hint == "pass an --output you can write"


def test_a_slow_disk_lengthens_every_estimate_that_writes_checkpoints():
    sizes = estimates.Sizes(300, 100, 100, 10)
    fast, slow = speed("a", 0.01), speed("a", 0.01)
    fast.parameters = slow.parameters = 4_000_000
    fast.write_s, slow.write_s = 1 / 1e9, 1 / 10e6
    per_epoch = 2 * 4_000_000 * 4 * (slow.write_s - fast.write_s)  # best and last, 4 bytes a parameter
    assert estimates.final_head_s(slow, sizes, 10) - estimates.final_head_s(fast, sizes, 10) == \
        pytest.approx(10 * per_epoch)
    assert estimates.checkpoints_s(slow, 40) > 40 * 3 > estimates.checkpoints_s(fast, 40)
