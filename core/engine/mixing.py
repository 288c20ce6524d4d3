"""mixup and cutmix where the trainable part of the network starts.

A batch x (images when nothing is frozen, otherwise the frozen prefix's output,
possibly read from the activation cache) is mixed with itself reversed, as timm's
Mixup does in batch mode: mixup blends whole tensors, cutmix pastes a box of the
reversed batch into a feature map or image. The loss is lam x loss(y) + (1 - lam)
x loss(y reversed). Mixing after the cache read is manifold mixup: the cache keeps
serving the same activations and nothing in its key changes.

Each step draws from a generator seeded by (run seed, step), so a run resumed
inside an epoch mixes exactly as one that never stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tlzoo.data.batches import epoch_seed

MIX_SEED_SALT = 0x31C5


@dataclass
class Mixed:
    x: torch.Tensor
    y_other: torch.Tensor  # labels of the batch mixed in
    lam: float  # weight of the batch's own labels

    def loss(self, criterion, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lam * criterion(logits, y) + (1.0 - self.lam) * criterion(logits, self.y_other)


class Mixer:
    """`mix(x, y, step)` returns a Mixed, or None when this step is not mixed."""

    def __init__(self, spec, seed: int):
        self.spec, self.seed = spec, seed

    @classmethod
    def from_spec(cls, spec, seed: int) -> "Mixer | None":
        return cls(spec, seed) if spec.prob > 0 and (spec.mixup_alpha > 0 or spec.cutmix_alpha > 0) else None

    def mix(self, x: torch.Tensor, y: torch.Tensor, step: int) -> Mixed | None:
        spec = self.spec
        generator = torch.Generator().manual_seed(epoch_seed(self.seed ^ MIX_SEED_SALT, step))
        if x.shape[0] < 2 or _uniform(generator) >= spec.prob:
            return None
        spatial = x.ndim == 4
        use_cutmix = spec.cutmix_alpha > 0 and spatial
        if use_cutmix and spec.mixup_alpha > 0:
            use_cutmix = _uniform(generator) < spec.switch_prob
        if not use_cutmix and spec.mixup_alpha <= 0:  # cutmix only, on pooled features: blend them instead
            alpha = spec.cutmix_alpha
        else:
            alpha = spec.cutmix_alpha if use_cutmix else spec.mixup_alpha
        lam = _beta(alpha, generator)
        other = x.flip(0)
        if use_cutmix:
            mixed, lam = cutmix(x, other, lam, generator)
        else:
            mixed = x * lam + other * (1.0 - lam)
        return Mixed(mixed, y.flip(0), lam)


def cutmix(x: torch.Tensor, other: torch.Tensor, lam: float, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """Paste a box of area ~(1 - lam) of `other` into `x` (N, C, H, W); lam corrected to the box clipped."""
    height, width = x.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    box_h, box_w = int(height * cut), int(width * cut)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = other[:, :, top:bottom, left:right]
    return mixed, 1.0 - (bottom - top) * (right - left) / (height * width)


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator))


def _beta(alpha: float, generator: torch.Generator) -> float:
    """Beta(alpha, alpha) from two gammas (torch's Beta takes no generator)."""
    a = torch._standard_gamma(torch.full((2,), float(alpha)), generator=generator)
    return float(a[0] / a.sum())
