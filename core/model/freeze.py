"""Freezing on parameter groups: what a freeze strategy returns, and how it is applied.

A strategy never sees the architecture. For each epoch it says which groups
train, counted from the top (the head is the last group), and how the learning
rate of the backbone groups is scaled. The engine creates every optimizer group
up front and only flips `requires_grad` and learning rates, so runs can resume.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Phase:
    """What trains during one epoch."""

    trainable: int  # number of groups, counted from the top, that train (>= 1: the head)
    lr_scale: float = 1.0  # multiplies every group's learning rate this epoch

    def first_trainable(self, num_groups: int) -> int:
        """Index of the lowest trainable group."""
        return max(0, num_groups - max(1, self.trainable))


class FreezeStrategy:
    """Base class: override `phase(epoch, num_groups)`."""

    def phase(self, epoch: int, num_groups: int) -> Phase:
        raise NotImplementedError

    def plan(self, epochs: int, num_groups: int) -> list[Phase]:
        return [self.phase(epoch, num_groups) for epoch in range(epochs)]


def set_trainable(groups: list[list[nn.Parameter]], first_trainable: int) -> None:
    """Groups below `first_trainable` are frozen, the rest train."""
    for index, group in enumerate(groups):
        for param in group:
            param.requires_grad_(index >= first_trainable)

