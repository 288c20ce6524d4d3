"""Integration: the demo spec on flowers12, then evaluate and predict from the run directory.

Runs the installed `tlzoo` script as a user would; needs ../shared/datasets/flowers12.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_cli

FLOWERS12 = REPO.parent / "shared" / "datasets" / "flowers12"
ACCURACY_BAR = 0.95


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    if not (FLOWERS12 / "test").is_dir():
        pytest.fail(f"{FLOWERS12} is missing: the integration test needs ../shared/datasets/flowers12 beside the repo")
    run_dir = tmp_path_factory.mktemp("flowers12") / "run"
    result = run_cli("run", str(REPO / "examples" / "flowers12.json"), "--output", str(run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir


def test_demo_spec_reaches_the_accuracy_bar(demo_run):
    summary = json.loads((demo_run / "summary.json").read_text())
    assert summary["num_train"] == 720 and summary["num_val"] == 240 and len(summary["classes"]) == 12
    assert summary["skipped"] == 0
    assert summary["best"]["val_top1"] >= ACCURACY_BAR, summary["best"]
    metrics = [json.loads(line) for line in (demo_run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == summary["epochs_run"] == 10
    assert summary["best"]["val_top1"] == max(m["val_top1"] for m in metrics)


def test_evaluate_gives_the_runs_numbers(demo_run):
    result = run_cli("evaluate", str(demo_run))
    assert result.returncode == 0, result.stderr
    summary = json.loads((demo_run / "summary.json").read_text())
    top1 = float(result.stdout.split("top-1 ")[1].split()[0])
    assert top1 == pytest.approx(summary["best"]["val_top1"], abs=1e-4)


def test_predict_names_the_classes_of_test_images(demo_run):
    result = run_cli("predict", str(demo_run), str(FLOWERS12 / "test"), "--format", "json", "--top-k", "3")
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)
    assert len(predictions) == 240
    assert all(p["error"] is None and len(p["top"]) == 3 for p in predictions)
    correct = sum(p["top"][0]["class"] == Path(p["path"]).parent.name for p in predictions)
    summary = json.loads((demo_run / "summary.json").read_text())
    # predict runs the same model through the same batched fast path as evaluate
    assert correct == round(summary["best"]["val_top1"] * 240)


def test_predict_marks_images_of_another_domain_unknown_and_keeps_the_flowers(demo_run, tmp_path):
    """The run's unknown threshold keeps about 95 % of flowers and rejects noise, stripes and a text page."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    far = tmp_path / "far"
    far.mkdir()
    Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(far / "noise.png")
    Image.fromarray((np.indices((224, 224))[1] // 16 % 2 * 255).astype(np.uint8)).convert("RGB").save(
        far / "stripes.png")
    page = Image.new("RGB", (224, 224), (250, 250, 248))
    for line in range(14):
        ImageDraw.Draw(page).text((10, 8 + 15 * line), "invoice total amount due account", fill=(20, 20, 20))
    page.save(far / "page.png")
    result = run_cli("predict", str(demo_run), str(far), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert all(p["unknown"] for p in json.loads(result.stdout)), result.stdout
    result = run_cli("predict", str(demo_run), str(FLOWERS12 / "test"), "--format", "json")
    kept = sum(not p["unknown"] for p in json.loads(result.stdout)) / 240
    summary = json.loads((demo_run / "summary.json").read_text())
    assert abs(kept - summary["trust"]["unknown"]["val_kept"]) <= 2 / 240  # the same images chose the threshold
