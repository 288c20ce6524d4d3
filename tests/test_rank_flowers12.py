"""Integration: `tlzoo rank` on flowers12 with the three shipped backbones against head_only runs of each.

The probe's top-1 must match the best epoch of a head_only run of the same backbone (the demo's
recipe: examples/flowers12.json) within 3 of the 240 images of the same validation split. The
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
    reached = {}
    for name in SHIPPED:
        run = run_cli("run", str(tmp_path / "best.json"), "--set", f"backbone.name={name}",
                      "--set", "report.enabled=false", "--output", str(tmp_path / name), env=env)
        assert run.returncode == 0, run.stderr
        assert "cache: reusing stage-" in run.stderr and "computing" not in run.stderr
        history = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        reached[name] = {"probe": rows[name]["probe_top1"], "last": history[-1]["val_top1"],
                         "best": max(record["val_top1"] for record in history)}
    # within 3 of the 240 validation images (1.25 points): about one standard error of a top-1 near 0.96 on
    # 240 images, so tighter would test the noise (on bf16 features lite0's best was 3 images above its probe,
    # on fp32 ones 1; lite1's last epoch 3 below)
    for name, top1 in reached.items():
        assert abs(top1["best"] - top1["probe"]) <= 3 / 240 + 1e-6, (name, reached)
