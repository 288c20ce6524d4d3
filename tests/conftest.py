"""Shared fixtures: tiny images, isolated plugin loading, CLI runs in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The suite checks the CPU paths, bit for bit where it can, on every machine: with a GPU visible, device
# "auto" would train every test's run there, where bf16 kernels change with the batch shape, so a run and its
# re-evaluation can disagree on one borderline image (28 of 945 tests failed on an H200). Set before torch
# touches CUDA, and inherited by the CLI subprocesses. benchmarks/gpu_bench.py checks CUDA on a GPU machine.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

REPO = Path(__file__).resolve().parents[1]
FLOWERS12 = REPO.parent / "shared" / "datasets" / "flowers12"


@pytest.fixture(scope="session", autouse=True)
def _own_cache_root(tmp_path_factory):
    """The session caches into its own folder, never the user's ~/.cache/tlzoo (CLI subprocesses inherit it).

    The user's backbone listing cache is copied in: its fingerprint says whether it still holds, and
    rebuilding it costs seconds. Tests that set TLZOO_CACHE_DIR themselves still win.
    """
    root = cache_folder_with_listing(tmp_path_factory.mktemp("tlzoo-cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TLZOO_CACHE_DIR", str(root))
        yield root


def cache_folder_with_listing(folder: Path) -> Path:
    """`folder`, made, holding a copy of the current cache root's backbone listing (if there is one).

    For tests that need a cache folder of their own (`tlzoo cache clear` in it, say): the
    listing costs seconds to rebuild, and its fingerprint still says whether it holds.
    """
    import shutil

    from tlzoo.cli.listing_cache import cache_path

    listing = cache_path()
    folder.mkdir(parents=True, exist_ok=True)
    if listing.is_file():
        shutil.copyfile(listing, folder / listing.name)
    return folder


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    """Every test sees a registry built from the plugins installed now."""
    from tlzoo.registry import reset_registry

    reset_registry()
    yield
    reset_registry()


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600):
    """Run `tlzoo ARGS...` in a fresh interpreter, as a user would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [str(Path(sys.executable).parent / "tlzoo"), *args],
        capture_output=True, text=True, env=full_env, cwd=cwd or REPO, timeout=timeout,
    )


@pytest.fixture(scope="session")
def faulty_plugins(tmp_path_factory) -> Path:
    """The deliberately faulty test distributions, pip-installed into one folder."""
    target = tmp_path_factory.mktemp("faulty-plugins")
    for name in ("broken", "misspelt", "duplicate"):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
             "--disable-pip-version-check", "--target", str(target), str(REPO / "tests" / "plugins" / name)],
            check=True, capture_output=True,
        )
    return target


@pytest.fixture
def one_thread(monkeypatch):
    """Tiny models on a shared 2-core machine: one thread, so OpenMP does not spin against other processes.

    Also for runs: run_spec sets the thread count from available_cpus, which answers 1 here
    (as reliability_support.py's launcher does, so in-process and subprocess runs compare bitwise).
    """
    import torch

    import tlzoo.runtime.device as runtime

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(runtime, "available_cpus", lambda: 1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """A tiny run exported three ways (export_support.py), once for test_export and test_export_tampering."""
    from export_support import export_tiny_run

    return export_tiny_run(tmp_path_factory.mktemp("export"))


@pytest.fixture
def tiny_backbone():
    """test/tiny_cnn (tests/support.py) in the (fresh, per-test) registry."""
    from support import TINY_CNN

    yield TINY_CNN.register()


@pytest.fixture
def tiny_model():
    """A TransferModel of test/tiny_cnn with a 3-class head."""
    from support import build_tiny, split_tiny
    from tlzoo.model.backbone import ClassifierHead, TransferModel

    return TransferModel(split_tiny(build_tiny(None).model), ClassifierHead(16, 3))


def resolved_backbone(name: str, **options):
    """A backbone from the registry with its options validated, as build_model takes it."""
    from tlzoo.spec import ResolvedComponent
    from tlzoo.registry import get_registry

    component = get_registry().backbones.get_component(name)
    return ResolvedComponent(component, component.options.model_validate(options))
