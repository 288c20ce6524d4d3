"""This machine's speed, measured before anything is decided: what each candidate's steps will cost.

The fastest of 4 batches of random images at the backbone's input size through
the model as a run builds it (device, precision, channels_last; eager, although
a run's passes take the BatchNorm-folded copy of tlzoo.runtime.fast_pass: a
real pass, its data loader competing for the cores, ran 1.3-1.5 times as long
as the folded timing predicts and 0.8-1.0 times the eager one; RESULTS.md,
2026-12-05 07:50), after one
warm-up batch of the same shape (the first call creates the kernels' primitives
and is slow); then, once every candidate has had that first pass, 2 batches
more each (`second_pass`), the fastest of all counting. Reading an image (decode, resize) costs what the data scan
measured per image. A fine-tune is timed likewise, the fastest of 2: the frozen
prefix once, then forward and backward through the trainable top and the head. On a GPU every timed call
waits for its kernels (`synchronize`) before the clock stops. The disk is timed too
(`measure_writes`): every epoch of a run writes its checkpoints, fsynced, and that
cost is the disk's, from 0.1 s an epoch on a quiet local disk to seconds on a shared one.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from tlzoo.engine.setup import model_setup
from tlzoo.errors import TlzooError
from tlzoo.model.backbone import count_parameters
from tlzoo.model.freeze import apply_plan
from tlzoo.rundir.writing import atomic_write
from tlzoo.runtime.device import autocast, synchronize

BATCH = 16  # the whole backbone's batch: per image, a batch of 8 measured up to twice a run's batch of 32
STEP_BATCH = 32  # a training step at the runs' batch size (tlzoo.auto.recipes.BATCH_SIZE), on repeated activations
# the backbone's speed orders the probes and sets every estimate: the fastest of 2 batches put lite0 at a third of
# its speed in 3 of 11 processes here (both batches slow), the fastest of 4 in none of 9
SPEED_REPEATS = 4
# ... and a second pass of every candidate after all had a first: in 2 of 18 commands here (the first of a
# benchmark, on a machine that had been idle) the first backbone measured, lite0, timed at 44-52 images/s in
# all its 4 batches against 114-141 in the others, which reorders the probes and changed one choice
SECOND_PASS_REPEATS = 2
WRITE_PROBE_BYTES = 16 * 2**20  # about one of a lite0 run's checkpoints (14-21 MB)
DEFAULT_WRITE_S = 1 / 50e6  # seconds per byte written, until the disk is timed


@dataclass
class Speed:
    """Seconds per image of one backbone on this machine."""

    backbone: str
    build_s: float  # building the model (weights read), per build
    forward_s: float  # the whole backbone without grad (features, validation, the test split)
    load_s: float  # reading one image (the scan's decode, per image)
    parameters: int = 0  # of the whole model (checkpoint sizes)
    num_features: int = 0  # pooled features (the probe's width)
    groups: int = 0  # backbone parameter groups (the head not counted)
    write_s: float = DEFAULT_WRITE_S  # seconds per checkpoint byte written (measure_writes)

    def features_s(self, images: int) -> float:
        """One pass of `images` through the whole backbone, images read from disk."""
        return self.build_s + images * (self.forward_s + self.load_s)


@dataclass
class FinetuneSpeed:
    """Seconds per image of a fine-tune of the top groups."""

    groups: int
    prefix_s: float  # the frozen prefix (once per image: the cache keeps its output)
    step_s: float  # forward and backward of the trainable top and head, per training image
    top_s: float  # forward of the top without grad, per validation image


def timed(call, repeats: int = 2, warm_up: bool = True) -> float:
    """Seconds of one call: the fastest of `repeats` after a warm-up (the first call of a shape builds its
    kernels); the fastest, because on a shared machine a slower one measures the neighbours, not the model."""
    if warm_up:
        call()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def random_batch(setup, size: int = BATCH) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(size, *setup.built.data_config.input_size, generator=generator)
    return x.to(setup.device).contiguous(memory_format=torch.channels_last)


def measure_speed(resolved, data, load_s: float) -> tuple[Speed, Callable[[], None]]:
    """Build the spec's model and time a batch through the whole backbone (`resolved`: a head-only spec); the
    timed call comes back too, for `second_pass`."""
    started = time.perf_counter()
    setup = model_setup(resolved, data)
    build_s = time.perf_counter() - started
    model = setup.built.model.eval()
    x = random_batch(setup)

    def forward():
        with torch.inference_mode(), autocast(setup.precision, setup.device):
            model.forward_stages(x)
        synchronize(setup.device)

    seconds = timed(forward, SPEED_REPEATS)
    return Speed(resolved.backbone.name, build_s, seconds / x.shape[0], load_s, count_parameters(model),
                 model.num_features, model.num_groups - 1), forward


def second_pass(speed: Speed, forward: Callable[[], None]) -> Speed:
    """`speed` with its batch timed again (already warm), the faster of both passes counting."""
    seconds = timed(forward, SECOND_PASS_REPEATS, warm_up=False)
    return dataclasses.replace(speed, forward_s=min(speed.forward_s, seconds / BATCH))


def measure_finetune(resolved, data, groups: int) -> FinetuneSpeed:
    """Time one training step of `resolved` (a partial spec) on a batch of its frozen prefix's output."""
    setup = model_setup(resolved, data)
    model, plan = setup.built.model, setup.plans[0]
    x = random_batch(setup)
    k = plan.frozen_stages

    def prefix():
        with torch.no_grad(), autocast(setup.precision, setup.device):
            out = model.forward_stages(x, 0, k).float()
        synchronize(setup.device)
        return out

    model.eval()
    prefix_s = timed(prefix)
    # the step at the runs' batch size; the prefix ran on BATCH images only, its output repeated
    activations = prefix().repeat(-(-STEP_BATCH // x.shape[0]), *([1] * (x.ndim - 1)))[:STEP_BATCH]
    apply_plan(model, plan, resolved.spec.train.bn)

    def step():
        model.zero_grad(set_to_none=True)
        model.head(model.forward_stages(activations, k)).logsumexp(1).mean().backward()
        synchronize(setup.device)

    step_s = timed(step)
    model.eval()

    def top():
        with torch.inference_mode(), autocast(setup.precision, setup.device):
            model.head(model.forward_stages(activations, k))
        synchronize(setup.device)

    top_s = timed(top)
    return FinetuneSpeed(groups, prefix_s / x.shape[0], step_s / STEP_BATCH, top_s / STEP_BATCH)


def measure_writes(folder: Path, what: str, hint: str) -> float:
    """Seconds per byte of a checkpoint-sized file written as run directories write theirs (fsynced, renamed,
    the folder fsynced), the faster of 2, in `folder` or its nearest existing parent; the file is removed.
    A folder that cannot be written fails here, before the search: `what` says where it came from."""
    folder = Path(folder).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    data = os.urandom(WRITE_PROBE_BYTES)  # not zeros: a compressing file system would write nothing
    path = folder / f".tlzoo-write-probe-{os.getpid()}"
    try:
        best = timed(lambda: atomic_write(path, data), repeats=2, warm_up=False)
    except TlzooError as exc:  # atomic_write's, its OSError as the context
        reason = getattr(exc.__context__, "strerror", None) or exc.message
        raise TlzooError(f"cannot write where the run goes, {what} ({folder}): {reason}", hint) from None
    finally:
        path.unlink(missing_ok=True)
    return best / len(data)
