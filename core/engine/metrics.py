"""Evaluating a TransferModel on a batch source: loss, top-1, top-5, confusion matrix.

The training loop's validation, `tlzoo evaluate` and `tlzoo predict` all use
`logits_over`, so a reloaded model reproduces the run's numbers exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F


TOP5_MIN_CLASSES = 5


@dataclass
class EvalResult:
    loss: float
    top1: float
    top5: float | None
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    count: int
    extra: dict = field(default_factory=dict)
    # the pass's logits and labels in the source's order; None when each rank saw only a share
    logits: torch.Tensor | None = field(default=None, repr=False, compare=False)
    labels: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def per_class_accuracy(self) -> list[float | None]:
        return per_class_accuracy(self.confusion)

    def metrics(self, prefix: str = "val_") -> dict:
        values = {f"{prefix}loss": self.loss, f"{prefix}top1": self.top1}
        if self.top5 is not None:
            values[f"{prefix}top5"] = self.top5
        return values


def logits_over(model, source, device, precision: str, frozen_stages: int = 0, fast: str = "eager", log=print,
                tta: str = "none"):
    """All logits and labels of one pass over `source`, in its order; the model goes to eval mode.

    `fast` 'folded' runs the stages through a BatchNorm-folded copy of the model as
    it is now (tlzoo.runtime.fast_pass); 'eager' runs the model itself. The head
    runs in fp32 after them. `tta` (tlzoo.engine.tta) averages views of image
    batches; batches of cached activations are never augmented.
    """
    from tlzoo.engine.tta import tta_logits
    from tlzoo.runtime.fast_pass import InferencePath, Stages

    model.eval()
    all_logits, all_labels = [], []
    paths: dict[int, InferencePath] = {}  # one per start stage; a pass normally has one
    for batch in source.epoch(0, frozen_stages):
        if batch.start not in paths:
            paths[batch.start] = InferencePath(Stages(model, batch.start), fast, precision, device, log,
                                               "evaluation model")
        mode = tta if batch.start == 0 else "none"
        all_logits.append(tta_logits(head_after(model, paths[batch.start]), batch.x, mode).cpu())
        all_labels.append(batch.y)
    if not all_logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(all_logits), torch.cat(all_labels)


def head_after(model, stages: Callable[[torch.Tensor], torch.Tensor],
               per_row: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> fp32 logits: `stages` (an InferencePath, in the run's precision), then the model's head in fp32.

    `per_row`: the head one image at a time, so an image's logits never depend on its batch (see
    tlzoo.engine.inference.RunPredictor); the head is a sliver of the pass's cost.
    """
    def forward(x: torch.Tensor) -> torch.Tensor:
        features = stages(x).float()
        with torch.inference_mode():
            if per_row:
                return torch.cat([model.head(row) for row in features.split(1)])
            return model.head(features)
    return forward


def per_class_accuracy(confusion: list[list[int]], num_classes: int = 0) -> list[float | None]:
    """Recall of each class from a confusion matrix (rows: true class); None for a class with no samples
    (also for classes past the matrix's rows, up to `num_classes`: a run that has no best epoch yet)."""
    out = [row[index] / sum(row) if sum(row) else None for index, row in enumerate(confusion)]
    return out + [None] * (num_classes - len(out))


def summarize(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, across_ranks: bool = False) -> EvalResult:
    """Metrics of the logits; `across_ranks`: each rank holds a share of the images, and the metrics are
    those of all of them, from exact sums (losses, correct counts, the confusion matrix), not averages."""
    count = int(labels.numel())
    loss_sum = torch.zeros((), dtype=torch.float64)
    hits1, hits5 = 0, 0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    if count:
        loss_sum = F.cross_entropy(logits, labels, reduction="sum").double()
        predicted = logits.argmax(1)
        hits1 = int((predicted == labels).sum().item())
        if num_classes >= TOP5_MIN_CLASSES:
            hits5 = int((logits.topk(TOP5_MIN_CLASSES, dim=1).indices == labels[:, None]).any(1).sum().item())
        confusion.index_put_((labels, predicted), torch.ones(count, dtype=torch.long), accumulate=True)
    if across_ranks:
        from tlzoo.runtime.distributed import all_reduce_sum

        loss_sum = all_reduce_sum(loss_sum)
        count, hits1, hits5 = (int(v) for v in all_reduce_sum(torch.tensor([count, hits1, hits5])).tolist())
        confusion = all_reduce_sum(confusion)
    if count == 0:
        return EvalResult(math.nan, math.nan, None, [[0] * num_classes for _ in range(num_classes)], 0)
    top5 = hits5 / count if num_classes >= TOP5_MIN_CLASSES else None
    return EvalResult(loss_sum.item() / count, hits1 / count, top5, confusion.tolist(), count)


def evaluate(model, source, num_classes: int, device, precision: str, frozen_stages: int = 0,
             fast: str = "eager", log=print, tta: str = "none") -> EvalResult:
    logits, labels = logits_over(model, source, device, precision, frozen_stages, fast, log, tta)
    sharded = getattr(source, "sharded", False)
    result = summarize(logits, labels, num_classes, across_ranks=sharded)
    if not sharded:
        result.logits, result.labels = logits, labels
    return result
