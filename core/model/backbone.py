"""What a backbone plugin builds, and how tlzoo turns it into a transfer model.

A backbone plugin returns a `Backbone`: the original pretrained network (so that
weight files keyed by its own names load into it), the data config it was
trained with, the dotted name of its final classifier, and a `split` function
that cuts the network into sequential stages and parameter groups. tlzoo then
drops the classifier, puts a new head on top and works on the groups only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class DataConfig:
    """How the backbone expects its input (from its pretrained config)."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DataConfig":
        return cls(
            input_size=tuple(data["input_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            interpolation=data["interpolation"],
            crop_pct=float(data["crop_pct"]),
        )


@dataclass
class Split:
    """A network cut for transfer learning.

    `stages` run one after the other; the last yields pooled features of shape
    (N, num_features). `groups` are the backbone's parameters from stem to top;
    every stage boundary is also a group boundary, so a frozen prefix of groups
    maps onto a prefix of stages whose output can be cached.
    """

    stages: list[nn.Module]
    groups: list[list[nn.Parameter]]
    num_features: int


@dataclass
class Backbone:
    """What a backbone plugin's `build(options, weights=...)` returns."""

    model: nn.Module
    data_config: DataConfig
    classifier: str  # dotted name of the final nn.Linear in `model`, "" if none
    split: Callable[[nn.Module], Split]
    weights: str = "none"  # where the weights came from, for humans and sidecars
    notes: list[str] = field(default_factory=list)
    # for `weights: {"path": ...}`: (model, state, source) -> state under the model's own names, for a plugin
    # whose weights circulate in another layout (the lite packages' files); None: names must match as they are
    adapt_state: Callable[[nn.Module, dict, str], dict] | None = None


def get_submodule(model: nn.Module, dotted: str) -> nn.Module | None:
    try:
        return model.get_submodule(dotted) if dotted else None
    except AttributeError:
        return None


class ClassifierHead(nn.Sequential):
    """Dropout and a linear layer, with an optional hidden layer before it."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0, hidden: int | None = None):
        layers: list[nn.Module] = []
        if hidden:
            layers += [nn.Linear(in_features, hidden), nn.ReLU(inplace=True)]
            in_features = hidden
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_features, num_classes))
        super().__init__(*layers)

    @property
    def fc(self) -> nn.Linear:
        return self[-1]


class TransferModel(nn.Module):
    """Sequential stages of a pretrained backbone followed by a new head."""

    def __init__(self, split: Split, head: nn.Module):
        super().__init__()
        self.stages = nn.ModuleList(split.stages)
        self.head = head
        self.num_features = split.num_features
        names = {id(p): n for n, p in self.named_parameters()}
        self.group_names: list[list[str]] = [[names[id(p)] for p in group] for group in split.groups]
        self.group_names.append([n for n, _ in self.head.named_parameters()])
        self.group_names[-1] = ["head." + n for n in self.group_names[-1]]
        self._check_groups()

    def _check_groups(self) -> None:
        grouped = [n for group in self.group_names for n in group]
        every = [n for n, _ in self.named_parameters()]
        if sorted(grouped) != sorted(every):
            missing = sorted(set(every) - set(grouped))[:5]
            raise ValueError(f"backbone split leaves parameters out of the groups: {missing}")
        # a stage boundary must fall on a group boundary (the cache relies on it)
        position = {n: i for i, group in enumerate(self.group_names) for n in group}
        previous_last = -1
        for index, stage in enumerate(self.stages):
            stage_groups = sorted({position[f"stages.{index}.{n}"] for n, _ in stage.named_parameters()})
            if not stage_groups:
                continue
            if stage_groups[0] <= previous_last:
                raise ValueError(f"stage {index} shares a parameter group with the stage before it")
            previous_last = stage_groups[-1]

    @property
    def num_groups(self) -> int:
        """Parameter groups including the head (the last one)."""
        return len(self.group_names)

    def group_parameters(self) -> list[list[nn.Parameter]]:
        params = dict(self.named_parameters())
        return [[params[n] for n in group] for group in self.group_names]

    def stage_group_end(self) -> list[int]:
        """For each stage, the number of groups that lie wholly at or below its output."""
        position = {n: i for i, group in enumerate(self.group_names) for n in group}
        ends, last = [], 0
        for index, stage in enumerate(self.stages):
            indices = [position[f"stages.{index}.{n}"] for n, _ in stage.named_parameters()]
            last = max(indices) + 1 if indices else last
            ends.append(last)
        return ends

    def forward_stages(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for stage in self.stages[start:stop]:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_stages(x))


class Pooled(nn.Module):
    """Global average pooling and flattening, the usual last stage of a CNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.mean((2, 3))
        return x.flatten(1)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
