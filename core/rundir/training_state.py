"""The full training state as a checkpoint: what `last` holds so that a run can continue.

Model tensors keep the model's own names (so `tlzoo predict` can read `last`
like `best`); optimizer tensors go under `optimizer.<param id>.<key>` and RNG
states under `rng.*`. Everything that is not a tensor (param_groups, step
counters that are Python numbers, schedule, epoch and step, best metric,
early-stopping counter, history, Python and numpy RNG scalars) is JSON, kept
under "training" in the checkpoint's metadata. No pickle anywhere.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import numpy as np
import torch

from tlzoo.errors import TlzooError, WeightsError
from tlzoo.trust.record import TENSOR_PREFIX

OPTIMIZER, RNG = "optimizer.", "rng."  # model tensors keep their own names (stages.*, head.*)
EMA = "ema."  # the weight average of train.ema, under the model's names
TRUST = TENSOR_PREFIX  # what best holds for its trust scores (tlzoo.rundir.trust_store)


def flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors under `optimizer.<param id>.<key>`; param_groups and Python numbers as JSON."""
    tensors, scalars = {}, {}
    for param_id, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{OPTIMIZER}{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], data: dict) -> dict:
    state: dict[int, dict] = {}
    for name, tensor in tensors.items():
        if name.startswith(OPTIMIZER):
            param_id, key = name[len(OPTIMIZER):].split(".", 1)
            state.setdefault(int(param_id), {})[key] = tensor
    for param_id, entries in data["scalars"].items():
        state.setdefault(int(param_id), {}).update(entries)
    return {"state": state, "param_groups": data["param_groups"]}


def capture_rng(generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Python, numpy, torch CPU (and CUDA) and DataLoader generator states."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {f"{RNG}numpy": torch.from_numpy(keys.astype(np.int64)), f"{RNG}torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, value in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{RNG}cuda.{index}"] = value
    if generator is not None:
        tensors[f"{RNG}loader"] = generator.get_state()
    data = {"python": [version, list(internal), gauss], "numpy": [kind, int(pos), int(has_gauss), float(cached)]}
    return tensors, data


def restore_rng(tensors: dict[str, torch.Tensor], data: dict, generator: torch.Generator | None = None) -> None:
    version, internal, gauss = data["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, pos, has_gauss, cached = data["numpy"]
    np.random.set_state((kind, tensors[f"{RNG}numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors[f"{RNG}torch"])
    cuda = [tensors[f"{RNG}cuda.{i}"] for i in itertools.takewhile(lambda i: f"{RNG}cuda.{i}" in tensors,
                                                                     itertools.count())]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[:torch.cuda.device_count()])
    if generator is not None and f"{RNG}loader" in tensors:
        generator.set_state(tensors[f"{RNG}loader"])


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as saved: under the model's own names, so predict can read it."""
    return dict(model.state_dict())


def strip_training(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's tensors of a checkpoint, without optimizer and RNG state, the weight average or trust data."""
    return {name: value for name, value in tensors.items() if not name.startswith((OPTIMIZER, RNG, EMA, TRUST))}


def training_checkpoint(state, spec_json: dict, position: "EpochPosition | None" = None,
                        generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, training) of a TrainState: everything a run needs to continue.

    Tensors are the model's (own names), `optimizer.*` and `rng.*`; `training` is
    the JSON rest, stored under "training" in the checkpoint's metadata.
    `position` marks a stop inside an epoch.
    """
    tensors = model_tensors(state.model)
    optimizer_tensors, optimizer_data = flatten_optimizer(state.optimizer.state_dict())
    rng_tensors, rng_data = capture_rng(generator)
    tensors.update(optimizer_tensors)
    tensors.update(rng_tensors)
    schedule = state.schedule
    training = {
        "kind": "training-state",
        "spec": spec_json,
        "counters": state.counters(),
        "position": position.to_json() if position is not None else {"batch": 0},
        "optimizer": {"class": type(state.optimizer).__name__, **optimizer_data},
        "schedule": {"spec": schedule.spec.model_dump(mode="json"), "epochs": schedule.epochs,
                     "steps_per_epoch": schedule.steps_per_epoch},
        "rng": rng_data,
    }
    return tensors, training


def restore_training_state(state, tensors: dict[str, torch.Tensor], training: dict, source: str,
                           generator: torch.Generator | None = None) -> None:
    """Load model, optimizer, counters and RNG from a `training_checkpoint` into `state`."""
    if not isinstance(training, dict) or training.get("kind") != "training-state":
        raise WeightsError(f"{source} is not a tlzoo training checkpoint (it holds no optimizer or RNG state)",
                           "resume from a run directory whose last.safetensors tlzoo wrote")
    own_class = type(state.optimizer).__name__
    if training["optimizer"]["class"] != own_class:
        raise TlzooError(f"{source} was trained with optimizer {training['optimizer']['class']}, the spec asks "
                         f"for {own_class}", "keep train.optimizer.name as it was to resume")
    _load_model_state(state.model, strip_training(tensors), source)
    try:
        state.optimizer.load_state_dict(unflatten_optimizer(tensors, training["optimizer"]))
    except (ValueError, KeyError, RuntimeError) as exc:
        raise WeightsError(f"cannot restore the optimizer state from {source}: {exc}") from None
    state.load_counters(training["counters"])
    restore_rng(tensors, training["rng"], generator)


@dataclass
class EpochPosition:
    """A stop inside an epoch: batches done, the epoch's loss so far, and the RNG at that moment.

    The loop resumes by drawing the epoch's batches again (same order: it depends
    on seed and epoch only), dropping the first `batch` of them, and restoring
    the RNG just before the next one loads, as it was when the run stopped.
    """

    batch: int
    loss_total: float
    loss_count: int
    rng_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    rng_data: dict = field(default_factory=dict)

    @classmethod
    def capture(cls, batch: int, loss_total: float, loss_count: int) -> "EpochPosition":
        return cls(batch, loss_total, loss_count)  # the RNG goes into the checkpoint with the rest

    @classmethod
    def from_checkpoint(cls, tensors: dict[str, torch.Tensor], training: dict) -> "EpochPosition":
        position = training["position"]
        rng_tensors = {name: value for name, value in tensors.items() if name.startswith(RNG)}
        return cls(int(position["batch"]), float(position["loss_total"]), int(position["loss_count"]),
                   rng_tensors, training["rng"])

    def to_json(self) -> dict:
        return {"batch": self.batch, "loss_total": self.loss_total, "loss_count": self.loss_count}

    def rank_json(self) -> dict:
        """This process's own part of a stop inside an epoch under torchrun: its RNG now and its loss so far."""
        tensors, data = capture_rng()
        return {"loss_total": self.loss_total, "loss_count": self.loss_count, "rng": data,
                "rng_tensors": {name: {"dtype": str(value.dtype).removeprefix("torch."), "values": value.tolist()}
                                for name, value in tensors.items()}}

    @classmethod
    def from_rank_json(cls, batch: int, entry: dict) -> "EpochPosition":
        tensors = {name: torch.tensor(item["values"], dtype=getattr(torch, item["dtype"]))
                   for name, item in entry["rng_tensors"].items()}
        return cls(batch, float(entry["loss_total"]), int(entry["loss_count"]), tensors, entry["rng"])

    def restore(self) -> tuple[float, int]:
        """Put the RNG back as it was at the stop; returns the epoch's (loss total, sample count)."""
        restore_rng(self.rng_tensors, self.rng_data)
        return self.loss_total, self.loss_count


def _load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise WeightsError(f"{source} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}",
                           "resume with the spec the run was started with")
    for name, tensor in state.items():
        if tensor.shape != own[name].shape or tensor.dtype != own[name].dtype:
            raise WeightsError(f"{source}: tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, the model "
                               f"expects {own[name].dtype} {tuple(own[name].shape)}",
                               "resume with the spec the run was started with")
    model.load_state_dict(state)
