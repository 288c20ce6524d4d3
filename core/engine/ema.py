"""An exponential moving average of the trainable weights, with timm's ModelEmaV3 semantics.

After optimizer step s (1-based), every averaged tensor becomes
ema + (1 - d) x (weight - ema) with d = decay_at(s): 0 until update_after_step,
then `decay`, or with warm-up 1 - (1 + s / gamma) ^ -power capped at `decay`.
Only what trains is averaged: a parameter joins when its group first trains (its
average then equals its value, unchanged while frozen), with the floating-point
buffers (BatchNorm statistics) of the modules that own it. Frozen tensors are
never touched, so the frozen prefix's activation cache stays valid when the
average is swapped in for validation.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class WeightAverage:
    def __init__(self, spec):
        self.spec = spec
        self.shadow: dict[str, torch.Tensor] = {}  # name in model.state_dict() -> average

    def decay_at(self, step: int) -> float:
        """The decay used for the update after optimizer step `step` (1-based), as ModelEmaV3.get_decay."""
        spec = self.spec
        step = max(0, step - spec.update_after_step - 1)
        if step <= 0:
            return 0.0
        if spec.warmup:
            return max(min(1 - (1 + step / spec.warmup_gamma) ** -spec.warmup_power, spec.decay), 0.0)
        return spec.decay

    def track_trainable(self, model: torch.nn.Module) -> None:
        """Start averaging parameters that train now (call after each epoch's freeze plan is applied)."""
        for module_name, module in model.named_modules():
            own = [(name, p) for name, p in module.named_parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            prefix = f"{module_name}." if module_name else ""
            tensors = own + [(name, b) for name, b in module.named_buffers(recurse=False) if b.is_floating_point()]
            for name, tensor in tensors:
                self.shadow.setdefault(prefix + name, tensor.detach().clone())

    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = self.decay_at(step)
        live = self._live(model)
        averages = [self.shadow[name] for name in live]
        with torch.no_grad():
            torch._foreach_lerp_(averages, [live[name].detach() for name in live], 1.0 - decay)

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """The model holds the averages inside the block, its own weights again after it."""
        live = self._live(model)
        saved = {name: tensor.detach().clone() for name, tensor in live.items()}
        with torch.no_grad():
            for name, tensor in live.items():
                tensor.copy_(self.shadow[name])
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, tensor in live.items():
                    tensor.copy_(saved[name])

    def load(self, averages: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
        """Averages kept by a resumable checkpoint, placed where the model's own tensors are."""
        live = model.state_dict(keep_vars=True)
        self.shadow = {name: tensor.to(live[name].device, live[name].dtype).clone()
                       for name, tensor in averages.items() if name in live}

    def _live(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        state = model.state_dict(keep_vars=True)
        return {name: state[name] for name in self.shadow}
