"""The loss of one global batch when N processes each hold a share of it: the single process's mean.

DDP averages the N ranks' gradients, so each rank's mean over its own share
gives the single-process gradient only when every share weighs the same. The
last batch of an epoch breaks that (45 images in batches of 16 leave 13: rank 0
gets 7 and rank 1 gets 6 images plus one row of the sampler's padding), and so
do class weights (a weighted mean divides by the batch's total class weight).
Each rank therefore returns N x (its images' summed loss) / (the normaliser of
the whole global batch, summed over ranks in one all-reduce): the average over
ranks is exactly the mean the single process takes, padding rows count zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tlzoo.runtime.distributed import all_reduce_sum, world_size


class ShareOfGlobalMean:
    """`criterion(logits, y)` (a CrossEntropyLoss) as this rank's share of the global batch's mean.

    `real`: the leading rows that are images (Batch.real); None: every row. After a call,
    `images` is the number of images in the whole global batch.
    """

    def __init__(self, criterion: torch.nn.CrossEntropyLoss, real: int | None):
        self.criterion, self.real = criterion, real
        self.images = 0

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        criterion = self.criterion
        per_row = F.cross_entropy(logits, y, weight=criterion.weight, label_smoothing=criterion.label_smoothing,
                                  reduction="none")  # each row's loss times its class weight
        keep = (torch.arange(len(y), device=y.device) < (len(y) if self.real is None else self.real)).float()
        row_weight = keep if criterion.weight is None else keep * criterion.weight[y]
        local = torch.stack([row_weight.sum(), keep.sum()]).detach().double()
        normaliser, images = all_reduce_sum(local.cpu()).tolist()
        self.images = int(round(images))
        return (per_row * keep).sum() * (world_size() / normaliser)
