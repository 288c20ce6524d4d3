"""Small modules that the backbone splitters use to cut networks into stages."""

from __future__ import annotations

import torch
from torch import nn

from tlzoo.model.backbone import Split


def split_into(stages: list[nn.Module], num_features: int) -> Split:
    """One parameter group per stage (stages without parameters get none)."""
    groups = [list(stage.parameters()) for stage in stages]
    return Split(list(stages), [group for group in groups if group], num_features)


def downsamples(block: nn.Module) -> bool:
    """Does any convolution in `block` have a stride above 1?"""
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in block.modules())


def chunk_at(blocks: list[nn.Module], starts_new) -> list[nn.Sequential]:
    """Consecutive blocks, with a new chunk at every block for which `starts_new(block)` holds."""
    chunks: list[list[nn.Module]] = []
    for block in blocks:
        if not chunks or starts_new(block):
            chunks.append([])
        chunks[-1].append(block)
    return [nn.Sequential(*chunk) for chunk in chunks]


def chunk_after(blocks: list[nn.Module], ends_chunk) -> list[nn.Sequential]:
    """Consecutive blocks, closing a chunk after every block for which `ends_chunk(block)` holds."""
    chunks: list[list[nn.Module]] = [[]]
    for block in blocks:
        chunks[-1].append(block)
        if ends_chunk(block):
            chunks.append([])
    return [nn.Sequential(*chunk) for chunk in chunks if chunk]


class Renormalize(nn.Module):
    """Per-channel `x * scale + shift`: torchvision's `transform_input` for GoogLeNet and Inception v3."""

    def __init__(self, scale, shift):
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale).view(1, -1, 1, 1))
        self.register_buffer("shift", torch.tensor(shift).view(1, -1, 1, 1))

    def forward(self, x):
        return x * self.scale + self.shift


class ClassToken(nn.Module):
    """The first token of a transformer's sequence."""

    def forward(self, x):
        return x[:, 0]


class OwnerView(nn.Module):
    """Runs a piece of the original network's own forward code on parts registered here.

    The owner is kept in a tuple so that nn.Module does not register it (its
    other parts belong to other stages); the parts listed are registered, so
    their parameters belong to this stage only. train()/eval() also reach the
    owner's own flag, which some forward code reads.
    """

    def __init__(self, owner: nn.Module, modules: dict[str, nn.Module] | None = None,
                 params: dict[str, nn.Parameter | None] | None = None):
        super().__init__()
        self._owner = (owner,)
        for name, module in (modules or {}).items():
            self.add_module(name, module)
        for name, param in (params or {}).items():
            if param is not None:
                self.register_parameter(name, param)

    @property
    def owner(self) -> nn.Module:
        return self._owner[0]

    def train(self, mode: bool = True):
        super().train(mode)
        self.owner.training = mode
        return self
