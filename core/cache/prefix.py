"""A batch source that runs the frozen prefix of the network once, not once per epoch.

When stages [0, k) are frozen for an epoch, `FrozenPrefixSource` yields their
output, computed once per input view, as `Batch(x, y, start=k)`; the engine
then runs only the trainable rest. Deterministic transforms need one view per
image. Random augmentation gets `views` augmented views per image, made once
with a seed of their own; epoch e shows image i its view (offset_i + e) mod
views, so every view is seen once before any repeats. With k = 0 (nothing
frozen) the source hands over to the plain loader it wraps.

Batches come in exactly the order the wrapped loader would give (the same
sampler, seeded the same way), so with deterministic transforms a cached run
trains on the same batches as an uncached one.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tlzoo.data.batches import Batch, epoch_seed, real_rows
from tlzoo.runtime.device import release_freed_memory
from tlzoo.runtime.heartbeat import Heartbeat, eta
from tlzoo.runtime.fast_pass import InferencePath, Stages
from tlzoo.runtime.interrupts import ignore_stop_signals
from tlzoo.cache.byte_inputs import byte_variant
from tlzoo.cache.keys import digest, files_fingerprint, modules_fingerprint, transform_description
from tlzoo.cache.store import STORAGE, ActivationStore, MemoryBudget, key_lock, read_meta

VIEW_SEED_SALT = 0x5EED_CAC4E


@dataclass
class CacheSettings:
    """What every cached source of a run shares."""

    root: Path  # <cache dir>/activations
    persist: bool  # publish finished stores for later runs
    budget: MemoryBudget
    identity: dict  # backbone name, options, weights source, background, ...: part of every key
    device: torch.device
    precision: str  # of the frozen pass: fp32, bf16 or fp16
    exact: bool  # store fp32 activations as fp32 (precision: fp32 asked for); else 16-bit
    require_smaller: bool  # auto mode: skip a boundary whose activation outgrows the input image
    log: Callable[[str], None] = print
    skipped: set = field(default_factory=set)  # (role, k) found not worth caching
    fast: str = "eager"  # 'folded': the frozen pass runs BatchNorm-folded (tlzoo.runtime.fast_pass)
    latest_prefix: tuple | None = None  # (key, InferencePath): shared by the train and val builds


DECODE_THREADS = 2  # per loader process: a phone photo's decode dwarfs the frozen pass's share of an image
_decode_pools: dict[int, ThreadPoolExecutor] = {}  # by process id: a forked loader worker makes its own


def decode_pool() -> ThreadPoolExecutor:
    pool = _decode_pools.get(os.getpid())
    if pool is None:
        pool = _decode_pools[os.getpid()] = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="tlzoo-decode")
    return pool


class ViewInputs(Dataset):
    """(image tensor, row, view) for the listed (row, view) pairs; random views seeded per pair."""

    def __init__(self, dataset, pairs: list[tuple[int, int]], seed: int | None):
        self.dataset, self.pairs, self.seed = dataset, pairs, seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitems__(self, indices: list[int]) -> list:
        """A batch's items; deterministic views are decoded in threads (Pillow releases the GIL while it
        decodes and resizes: the one loader worker of a 2-core machine then keeps the frozen pass fed with
        12 Mpx photos). Random views seed the process-wide RNGs, so they stay in order in one thread."""
        if self.seed is not None or len(indices) < 2:
            return [self[index] for index in indices]
        return list(decode_pool().map(self.__getitem__, indices))

    def __getitem__(self, index: int):
        row, view = self.pairs[index]
        if self.seed is None:
            return self.dataset[row][0], row, view
        with seeded_rngs(view_seed(self.seed, row, view)):
            return self.dataset[row][0], row, view


def view_seed(seed: int, row: int, view: int) -> int:
    """The same number in every process and every run (unlike hash() of a str)."""
    return ((seed * 1_000_003 + row) * 1_000_033 + view) % (2**63 - 1)


class seeded_rngs:
    """Seed torch, random and numpy for one view; put the caller's RNG states back afterwards."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self.saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
        torch.manual_seed(self.seed)
        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)

    def __exit__(self, *exc):
        torch.set_rng_state(self.saved[0])
        random.setstate(self.saved[1])
        np.random.set_state(self.saved[2])
        return False


class FrozenPrefixSource:
    """Wraps a LoaderSource (`base`); see the module docstring."""

    def __init__(self, base, model, settings: CacheSettings, role: str, views: int | dict[int, int] = 1):
        self.base, self.model, self.settings, self.role = base, model, settings, role
        self.view_plan = views  # one count for every boundary, or {boundary k: count}
        self.labels = torch.tensor([label for _, label in base.items], dtype=torch.long)
        self.order_generator = torch.Generator()
        self.order = base.index_order(self.order_generator)  # the base loader's order, no images
        offsets = torch.Generator().manual_seed(base.seed ^ VIEW_SEED_SALT)
        self.view_offsets = torch.randint(0, 2**31 - 1, (len(base.items),), generator=offsets)
        self.store: ActivationStore | None = None
        self.store_k: int | None = None
        self.stamp: list[int] | None = None
        description, stable = transform_description(base.transform)
        self.transform_text = description
        self.stable = stable and settings.persist  # a store with an unstable key is not published

    def __len__(self) -> int:
        return len(self.base)

    @property
    def sharded(self) -> bool:
        return self.base.sharded

    def epoch(self, epoch: int, frozen_stages: int) -> Iterator[Batch]:
        store = self.store_for(frozen_stages) if frozen_stages > 0 else None
        if store is None:
            yield from self.base.epoch(epoch, frozen_stages)
            return
        self.order_generator.manual_seed(epoch_seed(self.base.seed, epoch))
        views = (self.view_offsets + epoch) % self.views_at(frozen_stages)
        for index, rows in enumerate(self.order):
            yield Batch(store.read(rows, views[rows]), self.labels[rows], frozen_stages,
                        real_rows(self.order, index, len(rows)))

    # -- the store for one boundary ------------------------------------------------------------

    def prefix_tensors(self, k: int) -> list[torch.Tensor]:
        return [t for stage in self.model.stages[:k] for t in (*stage.parameters(), *stage.buffers())]

    def version_stamp(self, k: int) -> list[int]:
        """Changes whenever any prefix tensor is modified in place (an optimizer step, a load)."""
        return [t._version for t in self.prefix_tensors(k)]

    def views_at(self, k: int) -> int:
        plan = self.view_plan
        return max(1, plan.get(k, 1) if isinstance(plan, dict) else plan)

    def store_for(self, k: int) -> ActivationStore | None:
        if (self.role, k) in self.settings.skipped:
            return None
        if self.store is not None and self.store_k == k and self.stamp == self.version_stamp(k):
            return self.store
        self.close()
        key_parts = self.key_parts(k)
        key = digest(key_parts)
        store = self.open_published(key)
        if self.sharded:  # under torchrun: each rank computes its share of a missing entry, then all read it
            from tlzoo.cache.sharded import build_sharded

            store = build_sharded(self, k, key, key_parts, store)
        elif store is None and self.stable:
            # one writer per entry: a second run with this key waits here, then reuses what the first published
            with key_lock(self.settings.root, key, self.settings.log):
                store = self.open_published(key) or self.build(k, key, key_parts)
        elif store is None:
            store = self.build(k, key, key_parts)
        if store is not None:
            self.store, self.store_k, self.stamp = store, k, self.version_stamp(k)
        return store

    def key_parts(self, k: int) -> dict:
        base = self.base
        return {
            **self.settings.identity, "role": self.role, "boundary": k,
            "prefix": modules_fingerprint(list(self.model.stages[:k])),
            "transform": self.transform_text, "views": self.views_at(k),
            "view_seed": base.seed if self.views_at(k) > 1 else None,
            "precision": self.settings.precision, "exact": self.settings.exact or self.role != "train",
            "fast": self.settings.fast,
            "files": files_fingerprint([path for path, _ in base.items]),
        }

    def open_published(self, key: str) -> ActivationStore | None:
        folder = self.settings.root / key
        meta = read_meta(folder) if self.stable else None
        if meta is None or meta.get("key") != key:
            return None
        store = ActivationStore.open(folder, meta, self.settings.budget)
        if store is not None:
            where = "RAM" if store.in_memory else "a memory map"
            self.settings.log(f"cache: reusing stage-{meta['boundary']} activations of {meta['items']} "
                              f"{self.role} images x {meta['views']} view(s) from {folder} (in {where})")
        return store

    def storage_dtype(self, produced: torch.dtype) -> str:
        """16-bit outputs are kept as they are; fp32 ones become bfloat16 unless exactness was asked for.

        Validation activations are always lossless, so `tlzoo evaluate` later reproduces the run's numbers.
        """
        if produced in (torch.bfloat16, torch.float16):
            return str(produced).removeprefix("torch.")
        return "float32" if self.settings.exact or self.role != "train" else "bfloat16"

    def build(self, k: int, key: str, key_parts: dict) -> ActivationStore | None:
        base, settings, view_count = self.base, self.settings, self.views_at(k)
        pairs = [(row, view) for view in range(view_count) for row in range(len(base.items))]
        started, store = time.perf_counter(), None
        heartbeat = Heartbeat(settings.log, len(pairs))  # a line every few seconds: a build can take minutes
        try:
            with contextlib.closing(self.prefix_outputs(k, pairs)) as outputs:
                for rows, views, out, x in outputs:
                    if store is None:
                        store = self.new_store(k, out, x)
                        if store is None:
                            return None
                    store.write(rows, views, out)
                    heartbeat.advance(len(rows), lambda done, total, seconds: (
                        f"cache: stage-{k} {self.role} activations: {done}/{total} computed, "
                        f"{eta(done, total, seconds)}"))
        except BaseException:
            if store is not None:
                store.close()
            raise
        if store is None:
            return None
        self.log_built(k, len(base.items), started)
        if self.stable:
            store.publish(settings.root / key, self.entry_meta(k, key, key_parts))
        return store

    def entry_meta(self, k: int, key: str, key_parts: dict) -> dict:
        return {"key": key, "boundary": k, "items": len(self.base.items), "views": self.views_at(k),
                "created": time.time(), "parts": key_parts}

    def log_built(self, k: int, computed: int, started: float) -> None:
        prefix, folded_before = self.last_prefix
        seconds = time.perf_counter() - started
        folded = "" if prefix is None or not prefix.folded_count or folded_before else (
            f" ({prefix.folded_count} BatchNorm layers folded in {prefix.seconds:.1f}s)")
        self.settings.log(f"cache: stage-{k} activations of {computed} {self.role} images x {self.views_at(k)} "
                          f"view(s) computed in {seconds:.1f}s{folded}")

    def prefix_outputs(self, k: int, pairs: list[tuple[int, int]]):
        """(rows, views, stage-k output, input) batch by batch for the (row, view) pairs, frozen stages in eval mode."""
        base, settings, view_count = self.base, self.settings, self.views_at(k)
        dataset, finish = byte_variant(self.base.dataset) or (self.base.dataset, None)
        inputs = ViewInputs(dataset, pairs, base.seed if view_count > 1 else None)
        # its own generator: a loader without one would draw its worker seed from the global RNG
        loader = DataLoader(inputs, batch_size=base.batch_size, num_workers=base.num_workers,
                            generator=torch.Generator().manual_seed(0),
                            worker_init_fn=ignore_stop_signals if base.num_workers else None)
        prefix, self.last_prefix = None, (None, True)
        stages = self.model.stages[:k]
        modes = [stage.training for stage in stages]
        for stage in stages:
            stage.eval()
        if base.num_workers:
            release_freed_memory()  # workers fork as the loop below starts
        try:
            with torch.no_grad():
                for x, rows, views in loader:
                    x = x.to(settings.device)
                    x = finish(x) if finish is not None else x
                    if prefix is None:
                        prefix = self.prefix_path(k, x)
                        self.last_prefix = (prefix, prefix.tried)
                    yield rows, views, prefix(x), x
        finally:
            for stage, mode in zip(stages, modes):
                stage.train(mode)

    def prefix_path(self, k: int, x: torch.Tensor) -> InferencePath:
        """The frozen pass for stages [0, k) on inputs like `x`: folded once, reused by the other role's build.

        Keyed by the prefix's weight versions and the input's shape, so a changed
        weight or another image size folds afresh; only the latest is kept.
        """
        key = (k, tuple(self.version_stamp(k)), tuple(x.shape[1:]), x.dtype)
        latest = self.settings.latest_prefix
        if latest is None or latest[0] != key:
            path = InferencePath(Stages(self.model, 0, k), self.settings.fast, self.settings.precision,
                                 self.settings.device, self.settings.log, f"stage-{k} prefix")
            self.settings.latest_prefix = latest = (key, path)
        return latest[1]

    def worth_storing(self, k: int, out: torch.Tensor, x: torch.Tensor) -> bool:
        """False (logged, and the boundary noted as skipped) when stage-k outputs like `out` are not kept."""
        settings, items, view_count = self.settings, len(self.base.items), self.views_at(k)
        shape = tuple(out.shape[1:])
        per_view, per_image = int(np.prod(shape)), int(np.prod(x.shape[1:]))
        if settings.require_smaller and per_view > per_image:
            settings.log(f"cache: not caching stage-{k} {self.role} activations: {shape} holds more values "
                         f"than the input image {tuple(x.shape[1:])}, so storing them saves little; "
                         "cache.enabled: true caches them anyway")
            settings.skipped.add((self.role, k))
            return False
        dtype = self.storage_dtype(out.dtype)
        nbytes = items * view_count * per_view * torch.empty(0, dtype=STORAGE[dtype][0]).element_size()
        if nbytes > settings.budget.remaining and nbytes > free_disk(settings.root) * 0.9:
            settings.log(f"cache: not caching stage-{k} {self.role} activations: {nbytes / 2**20:.0f} MiB "
                         f"fit neither cache.memory_mb nor the free space in {settings.root}")
            settings.skipped.add((self.role, k))
            return False
        return True

    def new_store(self, k: int, out: torch.Tensor, x: torch.Tensor) -> ActivationStore | None:
        if not self.worth_storing(k, out, x):
            return None
        settings, items, view_count = self.settings, len(self.base.items), self.views_at(k)
        shape, dtype = tuple(out.shape[1:]), self.storage_dtype(out.dtype)
        store = ActivationStore.create(items, view_count, shape, dtype, settings.budget, settings.root)
        where = "RAM" if store.in_memory else f"a memory-mapped file in {store.folder}"
        settings.log(f"cache: computing stage-{k} activations {shape} of {items} {self.role} images x "
                     f"{view_count} view(s), {store.nbytes / 2**20:.0f} MiB {dtype} in {where}")
        return store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        self.store, self.store_k, self.stamp = None, None, None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def free_disk(folder: Path) -> int:
    """Free bytes where `folder` is or will be: a cache folder not made yet asks its nearest existing parent."""
    folder = Path(folder).absolute()
    for candidate in (folder, *folder.parents):
        try:
            return shutil.disk_usage(candidate).free
        except FileNotFoundError:
            continue
        except OSError:
            return 0
    return 0
