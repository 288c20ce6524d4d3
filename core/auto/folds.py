"""Cross-validated scores for a small validation split: every train and val image scored once, held out.

A validation split of a few dozen images cannot tell the search's candidates
apart: one standard error of 57 right of 60 is 1.7 images, and the search picks
the best of a dozen by it. Below CV_BELOW_VAL validation images the search
pools train and val, cuts them into CV_FOLDS stratified, seeded folds, and
scores each candidate on every pooled image by a model that did not train on
it: 3 to 4 times as many images per score, and each fold trains on about as
many images as the train split (two thirds of the pool). The final run still
trains on the train split and picks its epoch on the val split.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

CV_FOLDS = 3
CV_BELOW_VAL = 500  # validation images: above, one split's standard error is about a point or less


@dataclass(frozen=True)
class Folds:
    count: int
    fold: torch.Tensor  # the fold of each pooled image: the train split's, then the val split's
    labels: torch.Tensor  # of each pooled image, in the same order

    @property
    def images(self) -> int:
        return self.fold.numel()

    def held_out(self, index: int) -> torch.Tensor:
        return self.fold == index

    def data(self, data, index: int):
        """`data` (a LabelledData) with fold `index` as its val split and the other folds as train."""
        pooled = data.train + data.val
        held = self.held_out(index).tolist()
        return dataclasses.replace(data, train=[item for item, out in zip(pooled, held) if not out],
                                   val=[item for item, out in zip(pooled, held) if out])

    def features(self, features, index: int):
        """(train_x, train_y, val_x, val_y) of fold `index`, from a tlzoo.engine.features.Features."""
        x = torch.cat([features.train_x, features.val_x]).float()
        y = torch.cat([features.train_y, features.val_y])
        if not torch.equal(y, self.labels):
            raise ValueError("features are not in the order of the data the folds were cut from")
        held = self.held_out(index)
        return x[~held], y[~held], x[held], y[held]


def make_folds(data, seed: int, count: int = CV_FOLDS) -> Folds:
    """Stratified folds of `data`'s train and val images: each class dealt round the folds in a seeded order."""
    labels = torch.tensor([label for _, label in data.train + data.val], dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    fold = torch.empty_like(labels)
    start = 0
    for label in labels.unique(sorted=True).tolist():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        fold[members] = (torch.arange(members.numel()) + start) % count
        start += members.numel()  # the next class starts where this one stopped: folds of equal size
    return Folds(count, fold, labels)


def cross_validates(data) -> bool:
    return 0 < len(data.val) < CV_BELOW_VAL
