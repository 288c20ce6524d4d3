"""Preprocessing inside the graph, and the host-side half that stays outside it.

With `--with-preprocessing` the exported graph takes uint8 images already at
the model's input size (resized and centre-cropped) and does the rest itself:
scale to [0, 1], subtract the mean, divide by the std, and for NHWC put the
channels first. A consumer in any language then only resizes and crops.
The arithmetic is torchvision's ToTensor + Normalize, in the same order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tlzoo.data.transforms import build_eval_transform
from tlzoo.model.backbone import DataConfig


class WithPreprocessing(nn.Module):
    """uint8 images (N,H,W,3 or N,3,H,W) -> normalized float -> the model's logits."""

    def __init__(self, model: nn.Module, mean, std, layout: str = "nhwc"):
        super().__init__()
        if layout not in ("nhwc", "nchw"):
            raise ValueError(f"layout {layout!r}: choose nhwc or nchw")
        self.model = model
        self.layout = layout
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)
        if self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        x = x / 255.0  # ToTensor divides by 255 before Normalize subtracts and divides
        return self.model((x - self.mean) / self.std)


class HostInput:
    """PIL image -> one array row the exported graph takes, as its metadata says."""

    def __init__(self, config: DataConfig, with_preprocessing: bool, layout: str = "nchw"):
        self.pipeline = build_eval_transform(config)
        self.with_preprocessing = with_preprocessing
        self.layout = layout

    def __call__(self, image) -> np.ndarray:
        if not self.with_preprocessing:
            return self.pipeline(image).numpy()  # resize, crop, ToTensor, Normalize: as `tlzoo predict RUN_DIR`
        pixels = np.asarray(self.pipeline.image_part(image), dtype=np.uint8)  # H, W, 3 after resize and crop
        return np.ascontiguousarray(pixels if self.layout == "nhwc" else pixels.transpose(2, 0, 1))
