"""Per-image records: what the model said about each validation image, and their CSV form."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

CSV_COLUMNS = ("path", "true", "predicted", "probability", "loss")


@dataclass(frozen=True)
class ImageRecord:
    path: str
    true: str
    predicted: str
    probability: float  # of the predicted class
    loss: float  # cross-entropy of the true class

    @property
    def correct(self) -> bool:
        return self.true == self.predicted


def records_csv(records: list[ImageRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        writer.writerow([r.path, r.true, r.predicted, f"{r.probability:.6f}", f"{r.loss:.6f}"])
    return buffer.getvalue()


def top_losses(records: list[ImageRecord], count: int) -> list[ImageRecord]:
    """The `count` images with the highest loss, highest first (path breaks ties, for stable reports)."""
    return sorted(records, key=lambda r: (-r.loss, r.path))[:count]
