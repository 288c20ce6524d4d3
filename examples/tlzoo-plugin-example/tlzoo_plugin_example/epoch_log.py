"""A run logger: one JSON line in the run directory for the start, every epoch and the end of a run.

What a logger plugin needs: `build(options, run_dir)` returns an object with
`start(spec, classes)`, `epoch(metrics)` and `end(summary, best_path)`.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class EpochLogOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str = Field("example-epochs.jsonl", description="file name inside the run directory")


class EpochLog:
    def __init__(self, options: EpochLogOptions, run_dir: Path):
        self.path = Path(run_dir) / options.file

    def _write(self, event: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(event) + "\n")

    def start(self, spec: dict, classes: list[str]) -> None:
        self._write({"event": "start", "name": spec.get("name"), "classes": classes})

    def epoch(self, metrics: dict) -> None:
        self._write({"event": "epoch", "epoch": metrics["epoch"], "val_top1": metrics.get("val_top1")})

    def end(self, summary: dict, best_path: Path | None) -> None:
        self._write({"event": "end", "best_epoch": summary.get("best_epoch"),
                     "best_path": None if best_path is None else str(best_path)})
