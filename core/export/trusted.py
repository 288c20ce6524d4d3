"""The exported graph's second output: the out-of-distribution score, computed inside the file.

With a run's trust record the graph returns (logits, ood_score): the score
module of tlzoo.trust.scores runs on the pooled features inside the graph, with
the tensors it needs (a bank of training features, class means) as constants.
The metadata carries the temperature, the threshold and the validation scores
it came from, so any consumer calls an image unknown exactly as `tlzoo predict`
does: ood_score > threshold + 1e-5 * max(1, |threshold|) (tlzoo.trust.threshold:
the validation image the threshold came from must not flip by float noise).
"""

from __future__ import annotations

import torch
from torch import nn

SCORE_OUTPUT = "ood_score"


class WithScore(nn.Module):
    """A TransferModel's logits and its score module's score, from one pass."""

    def __init__(self, model: nn.Module, scorer: nn.Module):
        super().__init__()
        self.model, self.scorer = model, scorer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_stages(x)
        logits = self.model.head(features)
        return logits, self.scorer(features, logits)
