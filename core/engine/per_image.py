"""Per-image records of one evaluation pass: path, true and predicted class, probability, loss."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from tlzoo.errors import TlzooError
from tlzoo.report.records import ImageRecord


def records_from_logits(items: list[tuple[Path, int]], logits: torch.Tensor, labels: torch.Tensor,
                        classes: list[str]) -> list[ImageRecord]:
    """One record per item; `logits` and `labels` come from a pass over `items` in their order."""
    if len(items) != len(labels) or any(label != int(y) for (_, label), y in zip(items, labels.tolist())):
        # an unordered or incomplete pass would pin losses on the wrong images: a tlzoo bug, never silent
        raise TlzooError("the evaluation pass did not return one result per image in order",
                         "this is a bug in tlzoo; please report it")
    if not items:
        return []
    probabilities = logits.float().softmax(1)
    confidence, predicted = probabilities.max(1)
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    return [ImageRecord(str(path), classes[label], classes[p], c, loss)
            for (path, label), p, c, loss in zip(items, predicted.tolist(), confidence.tolist(), losses.tolist())]
