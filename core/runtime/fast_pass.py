"""The fast CPU path for passes that need no gradient: BatchNorm folded, channels_last, the run's precision.

Under `precision: auto` on a CPU, frozen-prefix, validation, evaluate and
predict passes run a copy of the stages with every BatchNorm that follows a
convolution folded into it (tlzoo.runtime.folding), fed channels_last input.
Measured on a quiet 2-core Xeon with lite0's stages at batch 32
(benchmarks/RESULTS.md, 2026-12-02): fp32 eager 103 img/s, folded 145;
emulated AVX2 68 and 87; bf16 autocast 132 and 187. TorchScript (trace +
freeze + optimize_for_inference, tlzoo's path before) was faster still in fp32
(173, AVX2 99) but is deprecated upstream; inductor's 30-40 s compile pays off
only beyond thousands of images and on AVX2 it ran slower than TorchScript;
torch.export's module runs op by op like eager.

`InferencePath` wraps one module. It folds lazily on the first batch, checks
the folded copy against the module in fp32 on a second input, and otherwise
runs the module itself, logging once why (a BatchNorm whose convolution also
feeds something else, a module that does not return a tensor). The folded copy
shares every tensor it does not change with the module, but does not follow
later changes to the module's weights: build a new path after training
changes them. `precision: fp32` runs the module itself (the exact reference).
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from tlzoo.runtime.device import autocast
from tlzoo.runtime.folding import fold_batchnorm

# how far folded outputs may stray from the module's in fp32 (folding reorders float sums)
ATOL, RTOL = 1e-3, 1e-3
CHECK_IMAGES = 2  # a couple keep folding and checking cheap


def fast_mode(requested: str, resolved: str, device: torch.device) -> str:
    """'folded' when `precision: auto` on a CPU; 'eager' otherwise.

    A precision asked for by name (fp32, bf16, fp16) runs the model as it is.
    """
    return "folded" if requested == "auto" and device.type == "cpu" else "eager"


class InferencePath:
    """Call `module` on a batch in inference mode and `precision`, BatchNorm-folded when `mode` is 'folded'."""

    reported: set[str] = set()  # fallback lines already logged in this process

    def __init__(self, module: nn.Module, mode: str, precision: str, device: torch.device,
                 log: Callable[[str], None] = print, label: str = "model"):
        self.module, self.mode, self.precision, self.device = module, mode, precision, device
        self.log, self.label = log, label
        self.folded: nn.Module | None = None
        self.folded_count = 0  # BatchNorm layers folded away
        self.tried = mode != "folded"
        self.seconds = 0.0  # spent folding and checking

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.tried:
            self.tried = True
            self.folded = self.fold(x)
        with torch.inference_mode(), autocast(self.precision, self.device):
            return (self.module if self.folded is None else self.folded)(x)

    def fold(self, x: torch.Tensor) -> nn.Module | None:
        started = time.perf_counter()
        try:
            folded, reason = self.fold_and_check(x)
        except Exception as exc:  # noqa: BLE001 - the module itself is always correct
            folded, reason = None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self.seconds = time.perf_counter() - started
        line = f"fast path: {self.label} runs unfolded: {reason}"
        if folded is None and reason and line not in InferencePath.reported:  # once, not once per epoch
            InferencePath.reported.add(line)
            self.log(line)
        return folded

    def fold_and_check(self, x: torch.Tensor) -> tuple[nn.Module | None, str]:
        """(the checked folded copy, '') or (None, why not; '' when there was nothing to fold)."""
        example = x[:CHECK_IMAGES].float()
        check = example.flip(-1)
        if check.ndim == 4:
            check = check.contiguous(memory_format=torch.channels_last)
        module = self.module
        modes = [m.training for m in module.modules()]
        module.eval()
        try:
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
                folded, count = fold_batchnorm(module, example)
                if count == 0:
                    return None, ""
                expected, got = module(check), folded(check)
        finally:
            for m, mode in zip(module.modules(), modes):
                m.train(mode)
        if not isinstance(got, torch.Tensor) or not isinstance(expected, torch.Tensor):
            return None, "the module does not return a tensor"
        if got.shape != expected.shape or not torch.allclose(got, expected, atol=ATOL, rtol=RTOL):
            gap = (got - expected).abs().max().item() if got.shape == expected.shape else "shape"
            return None, f"the folded copy disagrees with the module on a check input (max gap {gap})"
        self.folded_count = count
        return folded, ""


class Stages(nn.Module):
    """stages[start:stop] of a TransferModel as one module: a frozen prefix, or what a pass runs before the head."""

    def __init__(self, model, start: int = 0, stop: int | None = None):
        super().__init__()
        self.stages = nn.ModuleList(list(model.stages)[start:stop])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

