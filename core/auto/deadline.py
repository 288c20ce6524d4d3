"""The budget inside a run: an epoch hook that says the time left, and ends training before the budget does.

The engine calls it after every epoch (tlzoo.engine.extras.RunExtras.epoch_hooks).
When one more epoch, as long as the last one, would leave less than `reserve`
seconds (what must still happen after training: the test split, the report, or
for a trial the final run), training stops there as early stopping would: the
epoch the run keeps (its best, or for a head its last) is the model, and the run
ends normally.
"""

from __future__ import annotations

from typing import Callable

from tlzoo.auto.budget import Budget

STATUS_EVERY_S = 20.0  # the time left is said after an epoch when this long has passed since it was last said


class DeadlineHook:
    def __init__(self, budget: Budget, reserve: float, log: Callable[[str], None], what: str = "final run"):
        self.budget = budget
        self.reserve = reserve
        self.log = log
        self.what = what
        self.cut_at: int | None = None  # the epoch after which the budget stopped training
        self.said_at = budget.elapsed()

    def __call__(self, trainer, record: dict) -> None:
        state = trainer.state
        if state.epoch >= trainer.config.epochs or state.stopped_early:
            return
        next_epoch = float(record.get("seconds") or 0.0)
        left = self.budget.left()
        if left - next_epoch < self.reserve:
            state.stopped_early = True
            self.cut_at = state.epoch
            self.log(f"{self.what}: stopping after epoch {state.epoch} of {trainer.config.epochs}: another epoch "
                     f"(about {next_epoch:.0f} s) would leave less than the {self.reserve:.0f} s still needed "
                     f"({self.budget.status()}); " + ("this epoch is kept" if state.keep == "last"
                                                                else "the best epoch so far is kept"))
        elif self.what == "final run" and self.budget.elapsed() - self.said_at >= STATUS_EVERY_S:
            self.said_at = self.budget.elapsed()
            self.log(f"time: {self.budget.status()}")
