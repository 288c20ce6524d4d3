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
from torch.utils.data import DataLoader

from tlzoo.runtime.device import release_freed_memory
from tlzoo.runtime.interrupts import ignore_stop_signals


@dataclass
class Batch:
    x: torch.Tensor  # images (start 0) or stage-`start` activations
    y: torch.Tensor  # class indices
    start: int = 0  # stage index x enters at


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


class LoaderSource:
    """Images through a DataLoader; every batch starts at stage 0."""

    def __init__(self, setup: SourceSetup, dataset=None):
        from tlzoo.data.labelled import ImageDataset

        self.setup = setup
        # `dataset`: an ImageDataset stand-in over the same items (the decoded-image cache)
        self.dataset = dataset if dataset is not None else ImageDataset(setup.items, setup.transform,
                                                                        background=setup.background)
        self.generator = torch.Generator()
        self.loader = DataLoader(
            self.dataset,
            batch_size=setup.batch_size,
            shuffle=setup.shuffle,
            num_workers=setup.num_workers,
            drop_last=setup.drop_last,
            generator=self.generator,
            worker_init_fn=seed_worker if setup.num_workers else None,
            persistent_workers=False,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int, frozen_stages: int) -> Iterator[Batch]:
        self.generator.manual_seed(epoch_seed(self.setup.seed, epoch))
        if self.setup.num_workers:
            release_freed_memory()  # workers fork as the loop below starts
        for x, y in self.loader:
            yield Batch(x, y, 0)


def train_source(setup: SourceSetup) -> BatchSource:
    """The training batches; the performance work plugs a frozen-prefix cache in here."""
    return LoaderSource(setup)


def eval_source(setup: SourceSetup) -> BatchSource:
    """The validation batches, in file order."""
    return LoaderSource(setup)
