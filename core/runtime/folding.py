"""BatchNorm folded into the convolution before it, for passes that need no gradient.

In eval mode a BatchNorm is a fixed per-channel scale and shift, so when it
only normalizes one convolution's output it can be merged into that
convolution's weight and bias, and the separate pass over the activations goes
away. Which BatchNorm follows which convolution is read from one traced call
(forward hooks), not from architecture names: a BatchNorm counts as following a
convolution when the tensor it receives is the very tensor the convolution
returned. A convolution whose output also feeds something else would change
that other consumer too; the caller checks the folded copy against the module
on a second input and keeps the module when they disagree.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def conv_bn_pairs(module: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(convolution name, BatchNorm name) for each BatchNorm that receives exactly a convolution's output."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # id(output) -> (conv name, output kept alive)
    pairs: list[tuple[str, str]] = []
    calls: dict[str, int] = {}
    handles = []

    def after_conv(name):
        def hook(_module, _inputs, output):
            calls[name] = calls.get(name, 0) + 1
            produced[id(output)] = (name, output)
        return hook

    def before_norm(name):
        def hook(_module, inputs):
            calls[name] = calls.get(name, 0) + 1
            made = produced.get(id(inputs[0])) if inputs else None
            if made is not None and made[1] is inputs[0]:
                pairs.append((made[0], name))
        return hook

    for name, child in module.named_modules():
        if isinstance(child, CONVOLUTIONS) and not child.transposed:
            handles.append(child.register_forward_hook(after_conv(name)))
        elif isinstance(child, nn.modules.batchnorm._BatchNorm) and child.track_running_stats:
            handles.append(child.register_forward_pre_hook(before_norm(name)))
    try:
        with torch.no_grad():
            module(example)
    finally:
        for handle in handles:
            handle.remove()
    # a module called twice in one pass (shared weights) cannot be folded for one of its uses only
    return [(conv, norm) for conv, norm in pairs if calls[conv] == 1 and calls[norm] == 1]


def after_normalizing(norm: nn.Module) -> nn.Module | None:
    """What `norm` still does once its affine part is folded away, or None when that is unknown.

    A plain BatchNorm leaves nothing. A subclass whose only children are `drop`
    and `act` (timm's norm + activation layers), or `act` alone (the lite
    plugin's), applies them, in that order, after normalizing.
    """
    if type(norm) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        return nn.Identity()
    children = dict(norm.named_children())
    if set(children) in ({"drop", "act"}, {"act"}):
        return nn.Sequential(*(children[name] for name in ("drop", "act") if name in children))
    return None


def fold_batchnorm(module: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """(an eval-mode copy of `module` with BatchNorm folded into convolutions, how many were folded).

    `module` itself is never touched (no hook, no mode change), so other threads may run it meanwhile:
    the pairs are traced on the copy. The copy shares every tensor it does not change with `module`.
    With nothing to fold, `module` itself comes back.
    """
    folded = sharing_copy(module).eval()
    named = dict(folded.named_modules())
    pairs = [(conv, norm) for conv, norm in conv_bn_pairs(folded, example)
             if after_normalizing(named[norm]) is not None]
    if not pairs:
        return module, 0
    for conv_name, norm_name in pairs:
        conv, norm = named[conv_name], named[norm_name]
        rest = after_normalizing(norm)
        with torch.no_grad():
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var,
                                                norm.eps, norm.weight, norm.bias)
        if weight.ndim == 4 and conv.weight.is_contiguous(memory_format=torch.channels_last):
            weight = nn.Parameter(weight.detach().contiguous(memory_format=torch.channels_last), False)
        conv.weight, conv.bias = weight, bias
        parent_name, _, attribute = norm_name.rpartition(".")
        setattr(named[parent_name] if parent_name else folded, attribute, rest)
    return folded, len(pairs)


def sharing_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module`'s structure that shares its parameters and buffers (no tensor is copied)."""
    memo = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo)
