"""Whole runs with and without the frozen-prefix cache: same weights, same metrics, and a log that says why."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from support import make_image_folder, run_tiny


def same_numbers(a: list[dict], b: list[dict]) -> None:
    for left, right in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss", "val_top1", "frozen_stages"):
            assert left[key] == pytest.approx(right[key], abs=1e-6), key


@pytest.mark.parametrize("strategy", ["head_only", {"name": "partial", "options": {"groups": 1}}])
def test_cached_run_ends_with_the_uncached_weights_and_metrics(tmp_path, tiny_backbone, strategy):
    make_image_folder(tmp_path / "data", classes=3, per_class=8)
    common = dict(train__strategy=strategy, train__epochs=3, train__precision="fp32",
                  cache__dir=str(tmp_path / "cache"))
    plain, plain_metrics, plain_log = run_tiny(tmp_path, "plain", cache__enabled=False, **common)
    cached, cached_metrics, cached_log = run_tiny(tmp_path, "cached", cache__enabled=True, **common)
    assert "cache: off (cache.enabled is false)" in plain_log
    assert "cache: computing stage-" in cached_log
    same_numbers(plain_metrics, cached_metrics)
    for which in ("best", "last"):
        a = load_file(plain.run_dir / f"{which}.safetensors")
        b = load_file(cached.run_dir / f"{which}.safetensors")
        for name, tensor in a.items():
            if name.startswith(("head.", "stages.2.")) and tensor.is_floating_point():
                assert torch.allclose(tensor, b[name], atol=1e-5), name
    # the second cached run finds the first one's activations on disk
    _, again_metrics, again_log = run_tiny(tmp_path, "again", cache__enabled=True, **common)
    assert "cache: reusing stage-" in again_log and "cache: computing" not in again_log
    same_numbers(cached_metrics, again_metrics)


def test_bn_train_turns_the_cache_off_and_says_why(tmp_path, tiny_backbone):
    make_image_folder(tmp_path / "data", classes=2, per_class=4)
    _, metrics, log = run_tiny(tmp_path, "bn", train__bn="train", train__epochs=1, cache__dir=str(tmp_path / "cache"))
    assert "cache: activations off: train.bn is 'train'" in log
    assert not (tmp_path / "cache" / "activations").exists()
    assert metrics[0]["frozen_stages"] == 3


def test_full_fine_tune_needs_no_cache(tmp_path, tiny_backbone):
    make_image_folder(tmp_path / "data", classes=2, per_class=4)
    _, _, log = run_tiny(tmp_path, "none", train__strategy="none", train__epochs=1, cache__dir=str(tmp_path / "cache"))
    assert "freezes no whole stage in any epoch" in log
