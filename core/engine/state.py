"""Everything a training run carries from one step to the next, in one object.

Saving a TrainState (model, optimizer, schedule position, counters, best so
far, RNG) and restoring it is all a resume needs: the schedule and the batch
order are pure functions of (seed, epoch, step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from tlzoo.model.backbone import TransferModel
from tlzoo.engine.optim import Schedule


@dataclass
class TrainState:
    model: TransferModel
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    epoch: int = 0  # epochs completed = 0-based index of the next epoch
    step: int = 0  # optimizer steps completed
    monitor: str = "val_top1"
    keep: str = "best"  # "best": the epoch best by `monitor` is kept; "last": the last epoch with a finite one
    best_metric: float | None = None  # the monitor's best so far (early stopping counts from it)
    best_epoch: int | None = None  # 1-based, as in metrics.jsonl: the kept epoch (`keep`)
    best_record: dict | None = None  # the kept epoch's metrics line
    best_confusion: list[list[int]] | None = None
    bad_epochs: int = 0  # epochs since the monitored metric last improved by min_delta
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)  # one metrics line per epoch

    @property
    def higher_is_better(self) -> bool:
        return self.monitor != "val_loss"

    def is_improvement(self, value: float | None, min_delta: float = 0.0) -> bool:
        """A finite value better than the best so far by more than min_delta; NaN never is."""
        if value is None or not math.isfinite(value):
            return False
        if self.best_metric is None:
            return True
        gain = value - self.best_metric if self.higher_is_better else self.best_metric - value
        return gain > min_delta

    def is_kept(self, value: float | None) -> bool:
        """Whether this epoch's weights replace the kept ones (`keep`)."""
        if self.keep == "last":
            return value is not None and math.isfinite(value)
        return self.is_improvement(value)

    def counters(self) -> dict:
        """The JSON-able scalars (a checkpoint stores these next to the tensors)."""
        return {
            "epoch": self.epoch, "step": self.step, "monitor": self.monitor,
            "best_metric": self.best_metric, "best_epoch": self.best_epoch,
            "best_record": self.best_record, "best_confusion": self.best_confusion,
            "bad_epochs": self.bad_epochs, "stopped_early": self.stopped_early, "history": self.history,
        }

    def load_counters(self, values: dict) -> None:
        for key, value in values.items():
            setattr(self, key, value)
