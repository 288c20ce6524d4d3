"""A run that takes over the epochs of a finished run of the same training instead of training them again.

`tlzoo train` runs each fine-tune candidate as a trial; the spec it then
chooses differs from its trial's only in what comes after training (a test
split in the reader, the report on), and the same spec and seed train the same
weights. So the final run takes the trial's checkpoints over: it writes them as
its own (its spec, its sidecars), hands the trial's epochs to its loggers, and
goes on to the test split, calibration and report as any run does. The time of
those epochs is saved; `tlzoo run RUN/spec.json` still trains them from scratch.
"""

from __future__ import annotations

import json
from pathlib import Path

from tlzoo.rundir.checkpoint import load_checkpoint, save_checkpoint
from tlzoo.rundir.resume import BEST
from tlzoo.rundir.training_state import strip_training

# what the final run of `tlzoo train` changes in its trial's spec: none alters the epochs trained (a refit
# trains after them)
ADOPTABLE_CHANGES = ("data.reader", "report", "train.refit")


def take_over(trainer, setup, adopted, sidecar, stop) -> None:
    """Write `adopted`'s best and last checkpoints into this run's directory as this run's own; its trainer's
    state was restored from `adopted` (tlzoo.rundir.resume.guard_training). The calibration fitted after this
    run's training replaces the old run's, so `best` is written without it. A Ctrl-C or SIGTERM meanwhile
    (`stop` is armed) stops once both are written, as a training run stops at the end of a step."""
    tensors, meta = load_checkpoint(adopted.run_dir / BEST)
    save_checkpoint(setup.run_dir / BEST, strip_training(tensors), sidecar(setup, BEST, meta["metrics"]))
    trainer.save_last(trainer, trainer.state.history[-1])
    for record in trainer.state.history:
        setup.loggers.epoch(record)
    stop.stop(lambda: f"its trained model is in {setup.run_dir} (no test score, calibration or report yet)",
              "while taking over a finished run's epochs", f"score it with: tlzoo evaluate {setup.run_dir} "
                                                           "--data TEST_FOLDER")


def trained_seconds(adopted) -> float:
    """How long the old run took (its summary.json), so that this run's summary counts its epochs' time."""
    try:
        return float(json.loads((Path(adopted.run_dir) / "summary.json").read_text()).get("seconds") or 0.0)
    except (OSError, ValueError, TypeError):
        return 0.0
