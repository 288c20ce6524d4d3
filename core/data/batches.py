"""The one seam through which the training loop gets its batches.

Per epoch the engine knows `frozen_stages` (k): the number of leading stages of
the TransferModel whose parameters are all frozen. A batch source yields
`Batch(x, y, start)`, where `start` is the stage index `x` enters at: 0 for
images, k for activations a cache computed once. The engine then runs
`forward_stages(x, start, k)` without grad and the rest with grad, so a source
that starts at k skips the frozen part entirely.

The uncached source below is a DataLoader over ImageDataset. Its shuffle order
and worker seeds are a pure function of (seed, epoch): a run resumed at an
epoch boundary sees the same batches as one that never stopped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from tlzoo.errors import TlzooError
from tlzoo.runtime import distributed
from tlzoo.runtime.device import release_freed_memory
from tlzoo.runtime.interrupts import ignore_stop_signals


@dataclass
class Batch:
    x: torch.Tensor  # images (start 0) or stage-`start` activations
    y: torch.Tensor  # class indices
    start: int = 0  # stage index x enters at
    real: int | None = None  # under torchrun: the leading rows that are images, the rest padding; None: all


@runtime_checkable
class BatchSource(Protocol):
    """What the loop iterates; a cache implements the same two methods."""

    def __len__(self) -> int:
        """Batches per epoch."""

    def epoch(self, epoch: int, frozen_stages: int) -> Iterator[Batch]:
        """The batches of one epoch, knowing that stages [0, frozen_stages) are frozen."""


@dataclass
class SourceSetup:
    """Everything a batch source may need, so a cached source can be swapped in."""

    items: list[tuple[Path, int]]
    transform: Callable
    batch_size: int
    num_workers: int
    seed: int
    shuffle: bool
    background: tuple[int, int, int] = (255, 255, 255)
    drop_last: bool = False
    deterministic: bool = True  # the transform gives the same tensor every epoch
    # under torchrun: this rank's share (training: batch_size is the global batch; evaluation: rank::N)
    sharded: bool = False


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct 63-bit seed per (run seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: python and numpy follow the worker's torch seed; SIGTERM and Ctrl-C are
    left to the main process (tlzoo.runtime.interrupts)."""
    ignore_stop_signals()
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def kept_images(count: int, global_batch: int, world: int) -> int:
    """The images an epoch trains on: all, less a last partial batch that would leave each process a
    BatchNorm batch of one image (one process: a last batch of one image, dropped as before)."""
    rest = count % global_batch
    return count - rest if 0 < rest <= world and count > rest else count


class GlobalOrderSampler(DistributedSampler):
    """This rank's share of the single-process shuffle, so the job's global batches are the single-process ones.

    The permutation comes from the loader's own generator, as RandomSampler's does
    (seeded per epoch by the source, after the loader's one draw for worker seeds),
    cut to `kept_images`, then DistributedSampler's split: padded to a multiple of N
    by repeating its first images, rank r takes positions r, r + N, ... . Local batch j
    of every rank together is global batch j; padding only ever ends the last one, and
    `real_rows` says where, so that the loss counts every image once (tlzoo.engine.shared_loss).
    """

    def __init__(self, count: int, generator: torch.Generator, global_batch: int):
        self.count, self.kept = count, kept_images(count, global_batch, distributed.world_size())
        super().__init__(range(self.kept), num_replicas=distributed.world_size(), rank=distributed.rank(),
                         shuffle=True, drop_last=False)
        self.generator = generator

    def __iter__(self):
        indices = torch.randperm(self.count, generator=self.generator).tolist()[:self.kept]
        indices += indices[:self.total_size - len(indices)]  # DistributedSampler's padding
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def real_rows(self, index: int, rows: int, local_batch: int) -> int:
        """How many leading rows of this rank's batch `index` (of `rows` rows) are images, not padding."""
        first = index * local_batch
        return sum(1 for k in range(first, first + rows) if self.rank + k * self.num_replicas < self.kept)


def real_rows(loader: DataLoader, index: int, rows: int) -> int | None:
    """Batch.real for batch `index` of `loader`: None unless its sampler pads (GlobalOrderSampler)."""
    sampler = loader.sampler
    return sampler.real_rows(index, rows, loader.batch_size) if isinstance(sampler, GlobalOrderSampler) else None


class ShardSampler(Sampler):
    """Rows rank, rank + N, ... in file order: each image evaluated once in the whole job, none padded."""

    def __init__(self, count: int):
        self.rows = list(distributed.shard(count))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)


def local_batch_size(global_batch: int, world: int | None = None) -> int:
    """Each process's share of the global batch; `world`: the job's size (default: this job's)."""
    world = distributed.world_size() if world is None else world
    if global_batch % world:
        raise TlzooError(f"data.batch_size is {global_batch}, which the {world} processes of the job cannot "
                         f"share equally (it is the global batch, split across processes)",
                         f"set data.batch_size to a multiple of {world}, e.g. {max(world, global_batch // world * world)}")
    return global_batch // world


def batch_plan(setup: SourceSetup, generator: torch.Generator) -> dict:
    """DataLoader arguments giving the batches of `setup`: the whole set, or this rank's share of it."""
    if not (setup.sharded and distributed.active()):
        return {"batch_size": setup.batch_size, "shuffle": setup.shuffle, "drop_last": setup.drop_last,
                "generator": generator}
    if not setup.shuffle:
        return {"batch_size": setup.batch_size, "sampler": ShardSampler(len(setup.items)), "generator": generator}
    sampler = GlobalOrderSampler(len(setup.items), generator, setup.batch_size)
    return {"batch_size": local_batch_size(setup.batch_size), "sampler": sampler, "generator": generator}


class LoaderSource:
    """Images through a DataLoader; every batch starts at stage 0."""

    def __init__(self, setup: SourceSetup, dataset=None):
        from tlzoo.data.dataset import ImageDataset

        self.setup = setup
        # `dataset`: an ImageDataset stand-in over the same items (the decoded-image cache)
        self.dataset = dataset if dataset is not None else ImageDataset(setup.items, setup.transform,
                                                                        background=setup.background)
        self.generator = torch.Generator()
        self.loader = DataLoader(
            self.dataset,
            num_workers=setup.num_workers,
            worker_init_fn=seed_worker if setup.num_workers else None,
            persistent_workers=False,
            **batch_plan(setup, self.generator),
        )

    @property
    def sharded(self) -> bool:
        """Each rank sees a share: evaluation sums must be reduced over ranks."""
        return self.setup.sharded and distributed.active()

    # what a source wrapping this one (the frozen-prefix cache) reads; it never reaches into `setup`
    @property
    def items(self) -> list:
        return self.setup.items

    @property
    def seed(self) -> int:
        return self.setup.seed

    @property
    def transform(self):
        return self.setup.transform

    @property
    def deterministic(self) -> bool:
        return self.setup.deterministic

    @property
    def batch_size(self) -> int:
        return self.setup.batch_size

    @property
    def num_workers(self) -> int:
        return self.setup.num_workers

    def index_order(self, generator: torch.Generator) -> DataLoader:
        """Batches of row indices in this loader's order (same sampler and batching), no images read."""
        return DataLoader(range(len(self.setup.items)), **batch_plan(self.setup, generator))

    def over(self, dataset) -> "LoaderSource":
        """The same source reading its items through `dataset` (an ImageDataset stand-in: decoded images)."""
        return LoaderSource(self.setup, dataset)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int, frozen_stages: int) -> Iterator[Batch]:
        self.generator.manual_seed(epoch_seed(self.setup.seed, epoch))
        if isinstance(self.loader.sampler, DistributedSampler):
            self.loader.sampler.set_epoch(epoch)  # its order comes from the generator seeded just above
        if self.setup.num_workers:
            release_freed_memory()  # workers fork as the loop below starts
        for index, (x, y) in enumerate(self.loader):
            yield Batch(x, y, 0, real_rows(self.loader, index, len(y)))


def train_source(setup: SourceSetup) -> BatchSource:
    """The training batches; the performance work plugs a frozen-prefix cache in here."""
    return LoaderSource(setup)


def eval_source(setup: SourceSetup) -> BatchSource:
    """The validation batches, in file order."""
    return LoaderSource(setup)
