"""Inference-ready frozen modules: the fast CPU path for passes that need no gradient.

On an AVX2-only CPU (no native bfloat16) the fastest accurate way to run a
frozen convolutional network is TorchScript: trace, freeze (BatchNorm folded
into the convolutions, weights turned into constants) and
`optimize_for_inference` (oneDNN convolutions with prepacked weights), fed
channels_last input. Measured on the 2-core test machine with lite0 at batch
32 this runs about 3x faster than an eager fp32 NCHW pass, and it stays fp32,
so logits agree with eager to about 1e-6.

`InferencePath` wraps one module (the frozen prefix `stages[:k]` of a cache
pass, or the stages-plus-head of a validation, evaluate or predict pass). It
compiles lazily on the first batch, checks the compiled graph against eager on
a second input, and otherwise falls back to eager channels_last, logging one
line saying why: an untraceable module, a graph that disagrees with eager
(data-dependent control flow that tracing froze), or a torch without
TorchScript (it is deprecated upstream). Traced graphs take any batch size, so
a last partial batch needs no padding. The compiled copy does not follow later
changes to the module's weights: build a new path after training changes them.
"""

from __future__ import annotations

import time
import warnings
from typing import Callable

import torch
from torch import nn

# how far compiled logits may stray from eager fp32 (folded BatchNorm reorders float sums)
ATOL, RTOL = 1e-3, 1e-3
# batch size of compiled frozen and predict passes: lite0 on the 2-core test machine ran 32 faster than 64 or 16
FAST_PASS_BATCH = 32
# images traced and checked: a couple keep compiling cheap, shapes generalise to any batch size
TRACE_IMAGES = 2


def has_convolutions(module: nn.Module) -> bool:
    """TorchScript's gain on CPU comes from oneDNN convolutions; a head of linear layers gains nothing."""
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def fast_mode(requested: str, resolved: str, device: torch.device) -> str:
    """'jit' when `precision: auto` resolved to fp32 on a CPU; 'eager' otherwise.

    `precision: fp32` stays plain eager fp32 (the exact reference); bf16 and
    fp16 run eager under autocast.
    """
    return "jit" if requested == "auto" and resolved == "fp32" and device.type == "cpu" else "eager"


class InferencePath:
    """Call `module` on a batch in inference mode, compiled when `mode` is 'jit' (see the module docstring)."""

    reported: set[str] = set()  # fallback lines already logged in this process

    def __init__(self, module: nn.Module, mode: str = "eager", log: Callable[[str], None] = print,
                 label: str = "model"):
        self.module, self.mode, self.log, self.label = module, mode, log, label
        self.compiled: torch.jit.ScriptModule | None = None
        self.tried = mode != "jit"  # eager needs no compiling
        self.seconds = 0.0  # spent compiling and checking

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.tried:
            self.tried = True
            self.compiled = self.compile(x)
        with torch.inference_mode():
            return (self.compiled or self.module)(x)

    @property
    def compiled_ok(self) -> bool:
        return self.compiled is not None

    def compile(self, x: torch.Tensor) -> torch.jit.ScriptModule | None:
        if not has_convolutions(self.module):
            return None
        started = time.perf_counter()
        try:
            compiled, reason = self.trace_and_check(x)
        except Exception as exc:  # noqa: BLE001 - tracing fails in many ways; eager is always correct
            compiled, reason = None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self.seconds = time.perf_counter() - started
        line = f"fast path: {self.label} runs eager channels_last: TorchScript compile failed ({reason})"
        if compiled is None and line not in InferencePath.reported:  # once, not once per epoch
            InferencePath.reported.add(line)
            self.log(line)
        return compiled

    def trace_and_check(self, x: torch.Tensor) -> tuple[torch.jit.ScriptModule | None, str]:
        example = x[:TRACE_IMAGES]
        check = example.flip(-1).contiguous(memory_format=torch.channels_last)
        module = self.module
        modes = [m.training for m in module.modules()]
        module.eval()
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # deprecation and tracer notes; the check below decides
                traced = torch.jit.trace(module, example, check_trace=False)
                compiled = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
                expected = module(check)
                got = compiled(check)
        finally:
            for m, mode in zip(module.modules(), modes):
                m.train(mode)
        if not isinstance(got, torch.Tensor) or not isinstance(expected, torch.Tensor):
            return None, "the module does not return a tensor"
        if got.shape != expected.shape or not torch.allclose(got.float(), expected.float(), atol=ATOL, rtol=RTOL):
            gap = (got.float() - expected.float()).abs().max().item() if got.shape == expected.shape else "shape"
            return None, f"the compiled graph disagrees with eager on a check input (max gap {gap})"
        return compiled, ""


class StagesAndHead(nn.Module):
    """stages[start:] then the head of a TransferModel: what a validation or predict pass runs."""

    def __init__(self, model, start: int = 0):
        super().__init__()
        self.stages = nn.ModuleList(list(model.stages)[start:])
        self.head = model.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


class StagePrefix(nn.Module):
    """stages[:k] of a TransferModel: what a frozen-prefix cache pass runs."""

    def __init__(self, model, k: int):
        super().__init__()
        self.stages = nn.ModuleList(list(model.stages)[:k])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x
