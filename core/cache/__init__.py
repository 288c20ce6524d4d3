"""Caches that keep a run from redoing work: frozen-prefix activations and decoded images.

`attach_caches` is the one call the engine makes: it wraps the training and
validation batch sources, and logs whether caching is on and why (or why not).
"""

from __future__ import annotations

import contextlib
from collections import Counter
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import torch

from tlzoo.data.decode_size import RULE as DECODE_RULE
from tlzoo.runtime import distributed
from tlzoo.runtime.paths import default_cache_root
from tlzoo.cache.prefix import CacheSettings, FrozenPrefixSource
from tlzoo.cache.store import MemoryBudget, remove_dead_builds

__all__ = ["attach_caches", "cache_root", "default_cache_root", "reason_off", "run_cache_scope", "CacheSettings",
           "FrozenPrefixSource"]

# "for this run only" cache folders made since the innermost run_cache_scope began
_run_only_folders: list[Path] = []


def cache_root(resolved) -> Path:
    """cache.dir (relative to the spec file), else default_cache_root()."""
    if resolved.spec.cache.dir:
        return resolved.path(resolved.spec.cache.dir)
    return default_cache_root()


@contextlib.contextmanager
def run_cache_scope():
    """Removes, when the run ends however it ends, the temporary cache folders it had to make."""
    mark = len(_run_only_folders)
    try:
        yield
    finally:
        while len(_run_only_folders) > mark:
            shutil.rmtree(_run_only_folders.pop(), ignore_errors=True)


def writable_folder(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def frozen_epochs(plans) -> Counter:
    """{k (wholly frozen leading stages): how many epochs the plan (tlzoo.model.freeze.plan_run) has k}: one entry
    a boundary."""
    return Counter(plan.frozen_stages for plan in plans)


def tlzoo_version() -> str:
    try:
        return metadata.version("tlzoo")
    except metadata.PackageNotFoundError:
        return "unknown"


def reason_off(spec, ks: list[int]) -> str | None:
    """Why the activation cache is off for this run, or None when it is on."""
    if spec.cache.enabled is False:
        return "cache: off (cache.enabled is false)"
    if spec.train.bn == "train":
        return ("cache: activations off: train.bn is 'train', so the BatchNorm layers of frozen stages update "
                "their statistics on every batch and their output cannot be reused; set train.bn to 'frozen' "
                "to cache")
    if not any(ks):
        return f"cache: activations off: strategy {spec.train.strategy.name!r} freezes no whole stage in any epoch"
    return None


def usable_root(resolved, log) -> tuple[Path, bool]:
    """(cache root, persist): the configured folder, or a temporary one for this run when it is not writable."""
    root = cache_root(resolved)
    if writable_folder(root):
        return root, True
    fallback = Path(tempfile.mkdtemp(prefix="tlzoo-cache-"))
    _run_only_folders.append(fallback)
    log(f"cache: cannot write to {root}; caching in {fallback} for this run only "
        "(HINT: set cache.dir to a writable folder to keep the cache between runs)")
    return fallback, False


def with_decoded(source, sizes: dict, folder: Path, log, role: str):
    """The same source, its images decoded once (see tlzoo.cache.decoded)."""
    from tlzoo.cache.decoded import decoded_dataset

    dataset = decoded_dataset(source.setup, sizes, folder, log, role)
    return source if dataset is None else source.over(dataset)


def attach_caches(setup, train_source, val_source, log):
    """(train, val) batch sources with the caches in front where they apply.

    `setup` is the engine's ModelSetup (resolved spec, built model, data, device, precision, the freeze
    plan and the fast-pass mode, each worked out once by the engine).
    Decoded images are kept when at least two epochs read images (nothing frozen, or
    activations not cached); frozen-prefix activations whenever a whole stage is frozen.
    """
    spec, model = setup.resolved.spec, setup.built.model
    ks = frozen_epochs(setup.plans)
    off = reason_off(spec, ks)
    if spec.cache.enabled is False:
        log(off)
        return train_source, val_source
    root, persist = usable_root(setup.resolved, log)
    if distributed.active():  # the ranks share rank 0's folder (shares of a cache build meet there)
        root, persist = distributed.broadcast_object([str(root), persist])
        root = Path(root)
    image_epochs = ks.total() if off else ks[0]
    if image_epochs >= 2:
        sizes = getattr(setup.data, "sizes", {})
        train_source = with_decoded(train_source, sizes, root / "decoded", log, "train")
        val_source = with_decoded(val_source, sizes, root / "decoded", log, "val")
    if off:
        log(off)
        return train_source, val_source
    identity = {
        "backbone": setup.resolved.backbone.name,
        "options": setup.spec_json["backbone"]["options"],
        "weights": setup.built.weights,
        "data_config": setup.built.data_config.to_dict(),
        "background": list(spec.data.background),
        "decode": DECODE_RULE,
        "torch": torch.__version__,
        "tlzoo": tlzoo_version(),
    }
    for folder in remove_dead_builds(root / "activations") if persist else []:
        log(f"cache: removed {folder}, left by a build that was killed")
    settings = CacheSettings(
        root=root / "activations", persist=persist, budget=MemoryBudget(spec.cache.memory_mb * 2**20),
        identity=identity, device=setup.device, precision=setup.precision,
        exact=spec.train.precision == "fp32", require_smaller=spec.cache.enabled == "auto", log=log,
        fast=setup.fast)
    random_views = not train_source.deterministic
    cached_epochs = ks.total() - ks[0]
    if random_views:
        # an epoch reads one view per image: views beyond the epochs cached at a boundary would never be read
        views = {k: min(spec.cache.views, ks[k]) for k in sorted(set(ks) - {0}, reverse=True)}
        kind = "augmented views per image: " + ", ".join(f"{n} at stage {k}" for k, n in views.items())
    else:
        views, kind = 1, "one view per image (deterministic transforms)"
    log(f"cache: activations of frozen stages on ({cached_epochs} of {ks.total()} epochs), {kind}; "
        f"up to {spec.cache.memory_mb} MiB in RAM, then memory-mapped files under {settings.root}")
    return (FrozenPrefixSource(train_source, model, settings, "train", views),
            FrozenPrefixSource(val_source, model, settings, "val", 1))
