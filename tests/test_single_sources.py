"""Facts that tlzoo works out in one place only: the modules that need them read that one place."""

from __future__ import annotations

from pathlib import Path

from tlzoo.data.images import IMAGE_EXTENSIONS


def test_predict_finds_in_folders_exactly_the_suffixes_readers_read(tmp_path):
    from tlzoo.engine.inference import collect_images

    for suffix in IMAGE_EXTENSIONS:
        (tmp_path / f"x{suffix.upper()}").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    found = collect_images([tmp_path])
    assert sorted(p.suffix.lower() for p in found) == sorted(IMAGE_EXTENSIONS)


def test_backbone_listing_cache_and_activation_cache_share_one_root(tmp_path, monkeypatch):
    from tlzoo.cli import listing_cache
    from tlzoo.runtime.paths import default_cache_root

    monkeypatch.delenv("TLZOO_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "tlzoo"
    assert listing_cache.cache_path().parent == default_cache_root()
    monkeypatch.setenv("TLZOO_CACHE_DIR", str(tmp_path / "own"))
    assert listing_cache.cache_path() == tmp_path / "own" / "backbones-listing.json"


def test_the_test_session_caches_into_its_own_folder(_own_cache_root):
    from tlzoo.runtime.paths import default_cache_root

    assert default_cache_root() == _own_cache_root
    assert Path.home() not in default_cache_root().parents


def test_per_class_accuracy_is_one_function_for_evaluations_and_run_summaries():
    from tlzoo.engine.metrics import EvalResult, per_class_accuracy

    confusion = [[2, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert per_class_accuracy(confusion) == [1.0, 0.5, None]
    assert EvalResult(0.0, 0.0, None, confusion, 4).per_class_accuracy == [1.0, 0.5, None]
    assert per_class_accuracy([], 2) == [None, None]  # a run summarized before any best epoch


def test_a_run_builds_its_freeze_strategy_once_and_plans_it_once(tmp_path, tiny_backbone, one_thread):
    from support import make_image_folder, write_spec
    from tlzoo.engine.run import run_spec
    from tlzoo.model.freeze import FreezeStrategy, Phase
    from tlzoo.registry import Component, get_registry
    from tlzoo.spec import load_spec

    calls = {"build": 0, "phase": 0}

    class CountedHeadOnly(FreezeStrategy):
        def phase(self, epoch, num_groups):
            calls["phase"] += 1
            return Phase(1)

    def build(options):
        calls["build"] += 1
        return CountedHeadOnly()

    get_registry().catalog("strategies").add(Component("test/counted", "head only, counted", build, plugin="tests"))
    spec = write_spec(tmp_path, make_image_folder(tmp_path / "data", classes=2, per_class=2, val_per_class=1),
                      train__strategy="test/counted", train__epochs=3)
    run_spec(load_spec(spec, get_registry()), stream=__import__("io").StringIO())
    assert calls["build"] == 1  # the engine builds it; the cache and the allocator read the engine's plan
    assert calls["phase"] == 3  # one plan, one phase an epoch: the loop, the cache and the allocator read it


def test_stated_normalization_is_applied_by_one_function():
    from tlzoo.data.transforms import with_stated_normalization
    from tlzoo.model.backbone import DataConfig

    config = DataConfig(mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    assert with_stated_normalization(config, "light") is config
    stated = with_stated_normalization(config, [{"op": "normalize", "mean": [0.1, 0.2, 0.3]}])
    assert stated.mean == (0.1, 0.2, 0.3) and stated.std == (0.2, 0.2, 0.2)
