"""The `tensorboard` logger: scalars per epoch and the best model's confusion matrix as an image.

Needs the `tensorboard` package (`pip install 'tlzoo[tensorboard]'`); it is
imported only when a spec asks for this logger.
"""

from __future__ import annotations

import io
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tlzoo.errors import TlzooError
from tlzoo.registry import Component, hookimpl

SCALARS = {  # metrics.jsonl key -> TensorBoard tag
    "train_loss": "loss/train", "val_loss": "loss/val", "val_top1": "accuracy/val_top1",
    "val_top5": "accuracy/val_top5", "trainable_params": "model/trainable_params", "seconds": "time/epoch_seconds",
}


class TensorBoardOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: str = Field("tensorboard", description="event file folder, relative to the run directory")
    confusion_matrix: bool = Field(True, description="log the best model's confusion matrix as an image at the end")


class TensorBoardLogger:
    def __init__(self, options: TensorBoardOptions, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter  # checked now, so a missing package fails early
        except ImportError:
            raise TlzooError("the 'tensorboard' logger needs the tensorboard package, which is not installed",
                             "pip install 'tlzoo[tensorboard]', or remove \"tensorboard\" from the spec's "
                             "'loggers'") from None
        self.options = options
        self.log_dir = Path(run_dir) / options.dir
        self.make_writer = SummaryWriter
        self._writer = None
        self.classes: list[str] = []

    @property
    def writer(self):
        # made at the first epoch: a run that fails before training leaves no event folder behind
        if self._writer is None:
            self._writer = self.make_writer(log_dir=str(self.log_dir))
            self._writer.add_text("run/classes", ", ".join(self.classes), 0)
        return self._writer

    def start(self, spec: dict, classes: list[str]) -> None:
        self.classes = list(classes)

    def epoch(self, metrics: dict) -> None:
        step = metrics["epoch"]
        for key, tag in SCALARS.items():
            if metrics.get(key) is not None:
                self.writer.add_scalar(tag, metrics[key], step)
        for group, lr in enumerate(metrics.get("lr") or []):
            self.writer.add_scalar(f"lr/group_{group}", lr, step)
        self.writer.flush()

    def end(self, summary: dict, best_path: Path | None) -> None:
        confusion = summary.get("confusion_matrix") or []
        if self.options.confusion_matrix and confusion and any(map(any, confusion)):
            import numpy as np
            from PIL import Image

            from tlzoo.report.figures import confusion_png

            png = confusion_png(summary.get("classes") or self.classes, confusion, normalise=True)
            image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            self.writer.add_image("confusion_matrix/best", image, summary.get("best_epoch") or 0, dataformats="HWC")
        if self._writer is not None:
            self._writer.close()


@hookimpl
def register_loggers(register):
    register(Component(name="tensorboard", description="TensorBoard event files: scalars per epoch, confusion "
                       "matrix image (extra: tlzoo[tensorboard])", build=TensorBoardLogger,
                       options=TensorBoardOptions))
