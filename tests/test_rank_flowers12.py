"""Integration: `tlzoo rank` on flowers12 with the three shipped backbones against head_only runs of each.

The probe's top-1 must match a head_only run of the same backbone (the demo's recipe:
examples/flowers12.json) within one percentage point on the same validation split. The
runs train on the features the rank put in the cache, so after one feature pass per
backbone everything else reads cached activations.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import REPO, run_cli

FLOWERS12 = REPO.parent / "shared" / "datasets" / "flowers12"
SPEC = REPO / "examples" / "flowers12.json"
SHIPPED = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]

pytestmark = pytest.mark.slow


def test_rank_matches_head_only_runs_and_a_second_rank_reads_the_cache(tmp_path):
    if not (FLOWERS12 / "test").is_dir():
        pytest.fail(f"{FLOWERS12} is missing: the integration test needs ../shared/datasets/flowers12 beside the repo")
    env = {"TLZOO_CACHE_DIR": str(tmp_path / "cache")}
    started = time.perf_counter()
    cold = run_cli("rank", str(SPEC), "--backbones", "efficientnet_lite*", "--format", "json", "--offline",
                   "--write-spec", str(tmp_path / "best.json"), env=env)
    cold_seconds = time.perf_counter() - started
    assert cold.returncode == 0, cold.stderr
    ranking = json.loads(cold.stdout)
    rows = {row["backbone"]: row for row in ranking["ranked"]}
    assert sorted(rows) == SHIPPED and ranking["skipped"] == []
    probes = [row["probe_top1"] for row in ranking["ranked"]]
    assert probes == sorted(probes, reverse=True)
    assert not any(row["cached"] for row in rows.values()) and "0.5-0.8" in ranking["note"]

    started = time.perf_counter()
    warm = run_cli("rank", str(SPEC), "--backbones", "efficientnet_lite*", "--format", "csv", env=env)
    warm_seconds = time.perf_counter() - started
    assert warm.returncode == 0, warm.stderr
    assert "computing" not in warm.stderr and warm.stdout.count(",True,") == 3
    assert warm_seconds < cold_seconds / 2, (warm_seconds, cold_seconds)

    best = json.loads((tmp_path / "best.json").read_text())
    assert best["backbone"]["name"] == ranking["ranked"][0]["backbone"]
    for name in SHIPPED:
        run = run_cli("run", str(tmp_path / "best.json"), "--set", f"backbone.name={name}",
                      "--set", "report.enabled=false", "--output", str(tmp_path / name), env=env)
        assert run.returncode == 0, run.stderr
        assert "cache: reusing stage-" in run.stderr and "computing" not in run.stderr
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert abs(summary["best"]["val_top1"] - rows[name]["probe_top1"]) <= 0.01 + 1e-9, (name, summary["best"])
