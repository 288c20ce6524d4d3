"""Which precision a run's passes use: `train.precision` resolved for a device, and the log's note about it.

`auto` precision is decided by what the hardware computes quickly, not by
what it can compute at all: on a CPU without native bfloat16 (AVX2-only, as on
this project's 2-core test machine) torch emulates bf16 convolutions and
bf16 autocast runs lite0 more than ten times slower than fp32, so auto stays
fp32 there. Trainable parts always run in fp32 on CPU; only frozen and
inference passes use the reduced precision, BatchNorm-folded under `auto`
(tlzoo.runtime.fast_pass).
"""

from __future__ import annotations

import os

import torch

from tlzoo.errors import TlzooError


def forced_bf16() -> bool | None:
    """What TLZOO_CPU_BF16 forces (True: '1', False: '0'), or None when the CPU probe decides."""
    value = os.environ.get("TLZOO_CPU_BF16")
    return None if value not in ("0", "1") else value == "1"


def cpu_has_fast_bf16() -> bool:
    """oneDNN has native bf16 kernels here (AVX512-BF16/AMX, or AVX512 cores it counts as bf16-capable)."""
    if forced_bf16() is not None:  # for experiments and tests on other machines
        return forced_bf16()
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # the private probe moved or is missing in this torch build
        return False


def auto_precision(device: torch.device) -> str:
    """What `precision: auto` means on `device` for frozen and inference passes."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


def resolve_precision(value: str, device: torch.device) -> str:
    """The precision of frozen and inference passes: 'fp32', 'bf16' or 'fp16'.

    'auto' is auto_precision: bf16 autocast on a CPU with
    native bfloat16 (fp32 on AVX2-only CPUs, where torch emulates bf16 slowly),
    bf16 or fp16 on CUDA. Trainable parts always run in fp32 on CPU (bf16 did
    not speed training up there).
    """
    if value == "auto":
        return auto_precision(device)  # bf16 only where the CPU computes it natively
    if value == "fp16" and device.type == "cpu":
        raise TlzooError("train.precision 'fp16' needs a CUDA GPU; CPUs compute it slowly or not at all",
                         "use 'auto', 'bf16' or 'fp32' on CPU")
    return value


def precision_note(value: str, resolved: str, device: torch.device) -> str | None:
    """A line for the run log when `auto` chose fp32, or an explicit choice is known to be slow."""
    if device.type != "cpu":
        return None
    if value == "auto" and resolved == "fp32" and forced_bf16() is False:
        return "precision: fp32 (auto: TLZOO_CPU_BF16=0 forces the fp32 path; unset it to let the CPU decide)"
    if value == "auto" and resolved == "fp32":
        return (f"precision: fp32 (auto: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native "
                "bfloat16, where bf16 autocast is slower than fp32)")
    if value == "bf16" and forced_bf16() is False:
        return "precision: bf16 as asked (TLZOO_CPU_BF16=0 treats this CPU as one without native bfloat16)"
    if value == "bf16" and not cpu_has_fast_bf16():
        return ("precision: bf16 as asked, but this CPU has no native bfloat16 and emulates it slowly; "
                "HINT: train.precision 'auto' or 'fp32' is faster here")
    return None
