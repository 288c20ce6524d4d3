"""Pooled features and logits in one pass of a run's model: what the trust scores (tlzoo.trust) read beside the
logits.

The pooled features are the last stage's output, the head's input. A batch of
cached activations that already are the pooled features (a head_only run's
cache) costs no forward pass at all.
"""

from __future__ import annotations

from typing import Callable

import torch

from tlzoo.runtime.fast_pass import InferencePath, Stages


class FeatureForward:
    """x -> (fp32 pooled features, fp32 logits): the stages in the run's precision path, then the head in fp32.

    `per_row`: the head one image at a time, so an image's logits never depend on its batch (as
    tlzoo.engine.metrics.head_after does for tlzoo.engine.inference.RunPredictor)."""

    def __init__(self, model, start: int, fast: str, precision: str, device, log: Callable[[str], None],
                 label: str = "evaluation model", per_row: bool = False):
        self.model, self.per_row = model, per_row
        self.stages = InferencePath(Stages(model, start), fast, precision, device, log, label) \
            if start < len(model.stages) else None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.stages(x) if self.stages is not None else x.to(next(self.model.head.parameters()).device)
        with torch.inference_mode():
            features = features.float().flatten(1)
            if self.per_row:
                return features, torch.cat([self.model.head(row) for row in features.split(1)])
            return features, self.model.head(features)


def features_over(model, source, device, precision: str, frozen_stages: int = 0, fast: str = "eager",
                  log=print, tta: str = "none") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pooled features, logits, labels) of one pass over `source` in its order; the model goes to eval mode.

    `tta` (tlzoo.engine.tta) averages the views' probabilities of image batches; the features stay the
    plain view's."""
    from tlzoo.engine.tta import tta_logits

    model.eval()
    features, logits, labels = [], [], []
    paths: dict[int, FeatureForward] = {}
    for batch in source.epoch(0, frozen_stages):
        if batch.start not in paths:
            paths[batch.start] = FeatureForward(model, batch.start, fast, precision, device, log)
        forward = paths[batch.start]
        f, z = forward(batch.x)
        if tta != "none" and batch.start == 0:
            z = tta_logits(lambda x: forward(x)[1], batch.x, tta)
        features.append(f.cpu())
        logits.append(z.cpu())
        labels.append(batch.y)
    if not features:
        return torch.empty(0, 0), torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(features), torch.cat(logits), torch.cat(labels)
