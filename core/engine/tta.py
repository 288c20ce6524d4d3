"""Test-time augmentation: each image seen in a few views, the class probabilities averaged.

Views are made from the evaluation tensor itself (after resize, centre crop and
normalization), so TTA needs no second decode: `flip` adds the mirror image,
`flip_crops` also four corner crops of CORNER_SCALE of each side, resized back
to the input size. With one view (`none`) the logits are the plain path's,
untouched; with several, the returned "logits" are log(mean probability), so
softmax, argmax and cross-entropy of them are those of the averaged probabilities.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

TTA_CHOICES = ("none", "flip", "flip_crops")
CORNER_SCALE = 0.875  # timm's default crop_pct: a corner crop keeps as much as the centre crop did


def views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a batch of images (N, C, H, W) for `mode`, the batch itself first."""
    if mode not in TTA_CHOICES:
        raise ValueError(f"unknown TTA mode {mode!r}")
    out = [x]
    if mode == "none":
        return out
    out.append(x.flip(-1))
    if mode == "flip_crops":
        height, width = x.shape[-2:]
        crop_h, crop_w = round(height * CORNER_SCALE), round(width * CORNER_SCALE)
        for top, left in ((0, 0), (0, width - crop_w), (height - crop_h, 0), (height - crop_h, width - crop_w)):
            corner = x[..., top:top + crop_h, left:left + crop_w]
            out.append(F.interpolate(corner, size=(height, width), mode="bilinear", align_corners=False))
    return out


def tta_logits(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mode: str) -> torch.Tensor:
    """forward(x) for one view; log of the views' mean softmax otherwise."""
    batches = views(x, mode)
    if len(batches) == 1:
        return forward(x)
    probs = torch.stack([forward(view.contiguous(memory_format=torch.channels_last)).float().softmax(1)
                         for view in batches]).mean(0)
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
