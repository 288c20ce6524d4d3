"""EfficientNet-Lite in plain torch.nn, so that predicting with it imports neither timm nor torchvision.

The network is timm's `efficientnet_lite{0,1,2}` (EfficientNet without squeeze-excite,
ReLU6, fixed stem and head widths): the same modules under the same names, created
in the same order, so its state dict has timm's keys, shapes and order (the shipped
weights load by position, run directories made with timm's model load by name).
tests/test_lite_network.py holds it to timm's outputs and splits.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

STEM_WIDTH, HEAD_WIDTH = 32, 1280  # both fixed in the Lite variants, whatever the width multiplier


class StageDef(NamedTuple):
    kind: str  # "ds": depthwise-separable block, "ir": inverted residual (MBConv without squeeze-excite)
    repeats: int
    kernel: int
    stride: int  # of the stage's first block; the others have stride 1
    expand: int
    channels: int


# timm's arch strings 'ds_r1_k3_s1_e1_c16', 'ir_r2_k3_s2_e6_c24', ... as a table
STAGES = (
    StageDef("ds", 1, 3, 1, 1, 16),
    StageDef("ir", 2, 3, 2, 6, 24),
    StageDef("ir", 2, 5, 2, 6, 40),
    StageDef("ir", 3, 3, 2, 6, 80),
    StageDef("ir", 3, 5, 1, 6, 112),
    StageDef("ir", 4, 5, 2, 6, 192),
    StageDef("ir", 1, 3, 1, 6, 320),
)

# variant -> (width multiplier, depth multiplier)
SCALING = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
}


def make_divisible(value: float, divisor: int = 8) -> int:
    """The nearest multiple of `divisor`, but never more than 10 % below `value` (the EfficientNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def stage_repeats(repeats: int, depth: float, fixed: bool) -> int:
    """Blocks in a stage: scaled up (ceil) by the depth multiplier, except the first and last stage's."""
    return repeats if fixed else math.ceil(repeats * depth)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm then an activation, one module as in timm (its state is the BatchNorm's alone)."""

    def __init__(self, channels: int, act: bool = True):
        super().__init__(channels)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with probability `rate` (scaled up
    otherwise); the same random draws as timm's."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = 1 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"


def conv(in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    # symmetric padding k // 2 equals timm's ((stride - 1) + (kernel - 1)) // 2 for these odd kernels
    return nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False)


def drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate else nn.Identity()


class DepthwiseSeparable(nn.Module):
    """Depthwise conv, pointwise conv (no activation after it); a residual when the shape is kept."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, drop_rate: float):
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_dw = conv(in_chs, in_chs, kernel, stride, groups=in_chs)
        self.bn1 = BatchNormAct2d(in_chs)
        self.conv_pw = conv(in_chs, out_chs, 1)
        self.bn2 = BatchNormAct2d(out_chs, act=False)
        self.drop_path = drop_path(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return self.drop_path(out) + x if self.has_skip else out


class InvertedResidual(nn.Module):
    """Pointwise expansion, depthwise conv, linear pointwise projection; a residual when the shape is kept."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, expand: int, drop_rate: float):
        super().__init__()
        mid_chs = make_divisible(in_chs * expand)
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_pw = conv(in_chs, mid_chs, 1)
        self.bn1 = BatchNormAct2d(mid_chs)
        self.conv_dw = conv(mid_chs, mid_chs, kernel, stride, groups=mid_chs)
        self.bn2 = BatchNormAct2d(mid_chs)
        self.conv_pwl = conv(mid_chs, out_chs, 1)
        self.bn3 = BatchNormAct2d(out_chs, act=False)
        self.drop_path = drop_path(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv_pw(x))
        out = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(out))))
        return self.drop_path(out) + x if self.has_skip else out


class EfficientNetLite(nn.Module):
    """Stem, seven stages of blocks, a 1x1 head conv, average pooling, dropout and the classifier."""

    def __init__(self, variant: str, num_classes: int = 1000, drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        width, depth = SCALING[variant]
        self.drop_rate = drop_rate
        self.num_features = HEAD_WIDTH
        self.conv_stem = conv(3, STEM_WIDTH, 3, stride=2)
        self.bn1 = BatchNormAct2d(STEM_WIDTH)
        repeats = [stage_repeats(s.repeats, depth, fixed=i in (0, len(STAGES) - 1)) for i, s in enumerate(STAGES)]
        total, index, in_chs = sum(repeats), 0, STEM_WIDTH
        stages = []
        for stage, count in zip(STAGES, repeats):
            out_chs = make_divisible(stage.channels * width)
            blocks = []
            for number in range(count):
                stride = stage.stride if number == 0 else 1
                rate = drop_path_rate * index / total  # deeper blocks are dropped more often
                if stage.kind == "ds":
                    blocks.append(DepthwiseSeparable(in_chs, out_chs, stage.kernel, stride, rate))
                else:
                    blocks.append(InvertedResidual(in_chs, out_chs, stage.kernel, stride, stage.expand, rate))
                in_chs, index = out_chs, index + 1
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = conv(in_chs, HEAD_WIDTH, 1)
        self.bn2 = BatchNormAct2d(HEAD_WIDTH)
        self.classifier = nn.Linear(HEAD_WIDTH, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(pool_and_drop(self.forward_features(x), self.drop_rate, self.training))


def pool_and_drop(x: torch.Tensor, drop_rate: float, training: bool) -> torch.Tensor:
    x = F.adaptive_avg_pool2d(x, 1).flatten(1)
    return F.dropout(x, drop_rate, training) if drop_rate > 0 else x


class PooledFeatures(nn.Module):
    """The top stage's last part: average pooling and, in training, the backbone's dropout."""

    def __init__(self, drop_rate: float = 0.0):
        super().__init__()
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_and_drop(x, self.drop_rate, self.training)

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}"


def init_weights(model: nn.Module) -> None:
    """TensorFlow's EfficientNet initialisation, as timm does it: convs normal with fan-out (per group)
    variance, BatchNorm identity, the classifier uniform in +-1/sqrt(classes)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            nn.init.normal_(module.weight, 0, math.sqrt(2.0 / fan_out))
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.weight.size(0))
            nn.init.uniform_(module.weight, -bound, bound)
            nn.init.zeros_(module.bias)


def split_lite(model: EfficientNetLite):
    """Stem, each of the seven block stages, then head conv + pooling: nine stages, one parameter group
    each (the classifier is left out: tlzoo puts its own head on top)."""
    from tlzoo.model.splitting import split_into

    stem = nn.Sequential(model.conv_stem, model.bn1)
    top = nn.Sequential(model.conv_head, model.bn2, PooledFeatures(model.drop_rate))
    return split_into([stem, *model.blocks, top], model.num_features)
