"""The built-in freeze strategies; each works on parameter groups only."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tlzoo.model.freeze import FreezeStrategy, Phase
from tlzoo.registry import Component, NoOptions, hookimpl


class TrainAll(FreezeStrategy):
    def phase(self, epoch, num_groups):
        return Phase(trainable=num_groups)


class HeadOnly(FreezeStrategy):
    def phase(self, epoch, num_groups):
        return Phase(trainable=1)


class FreezeUnfreezeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    frozen_epochs: int = Field(1, ge=0, description="epochs training the head alone")
    unfreeze_lr_mult: float = Field(0.5, gt=0, description="lr scale once the backbone unfreezes")
    groups: int | None = Field(None, gt=0, description="groups to unfreeze from the top (default: all)")


class FreezeUnfreeze(FreezeStrategy):
    def __init__(self, options: FreezeUnfreezeOptions):
        self.options = options

    def phase(self, epoch, num_groups):
        if epoch < self.options.frozen_epochs:
            return Phase(trainable=1)
        count = num_groups if self.options.groups is None else min(num_groups, self.options.groups + 1)
        return Phase(trainable=count, lr_scale=self.options.unfreeze_lr_mult)


class GradualOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every: int = Field(1, gt=0, description="epochs between unfreezing one more group")
    start: int = Field(1, ge=0, description="epochs of head-only training before the first unfreeze")
    max_groups: int | None = Field(None, gt=0, description="stop after unfreezing this many backbone groups")


class Gradual(FreezeStrategy):
    def __init__(self, options: GradualOptions):
        self.options = options

    def phase(self, epoch, num_groups):
        opened = 0 if epoch < self.options.start else 1 + (epoch - self.options.start) // self.options.every
        if self.options.max_groups is not None:
            opened = min(opened, self.options.max_groups)
        return Phase(trainable=min(num_groups, 1 + opened))


class PartialOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    groups: int = Field(2, ge=0, description="backbone groups from the top that train with the head")


class Partial(FreezeStrategy):
    def __init__(self, options: PartialOptions):
        self.options = options

    def phase(self, epoch, num_groups):
        return Phase(trainable=min(num_groups, 1 + self.options.groups))


@hookimpl
def register_freeze_strategies(register):
    register(Component("none", "train every group from the first epoch", lambda options: TrainAll(), NoOptions))
    register(Component("head_only", "train the new head only; the backbone stays frozen",
                       lambda options: HeadOnly(), NoOptions))
    register(Component("freeze_unfreeze", "head alone for frozen_epochs, then unfreeze at a lower lr (fastai fine_tune)",
                       FreezeUnfreeze, FreezeUnfreezeOptions))
    register(Component("gradual", "unfreeze one more group from the top every `every` epochs",
                       Gradual, GradualOptions))
    register(Component("partial", "train the top `groups` backbone groups and the head throughout",
                       Partial, PartialOptions))
