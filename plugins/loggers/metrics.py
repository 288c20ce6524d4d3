"""The `metrics` logger: one JSON line an epoch in metrics.jsonl, and the same table as metrics.csv."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tlzoo.registry import Component, hookimpl
from tlzoo.rundir import outputs


class MetricsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    csv: bool = Field(True, description="also write metrics.csv (one column per metric, lr_0..lr_N per group)")


def csv_text(records: list[dict]) -> str:
    """Records as CSV: columns in first-seen order, the per-group learning rates spread into lr_<group>."""
    rows = []
    for record in records:
        row = {k: v for k, v in record.items() if k != "lr"}
        row.update({f"lr_{group}": lr for group, lr in enumerate(record.get("lr") or [])})
        rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class MetricsLogger:
    def __init__(self, options: MetricsOptions, run_dir: Path):
        self.options = options
        self.jsonl = Path(run_dir) / outputs.METRICS_FILE
        self.csv = Path(run_dir) / "metrics.csv"

    def start(self, spec: dict, classes: list[str]) -> None:
        pass

    def epoch(self, metrics: dict) -> None:
        outputs.append_jsonl(self.jsonl, metrics)
        if self.options.csv:
            # rewritten from metrics.jsonl each epoch, so a resumed run's CSV matches its JSONL
            lines = [json.loads(line) for line in self.jsonl.read_text(encoding="utf-8").splitlines() if line]
            outputs.atomic_write(self.csv, csv_text(lines).encode())

    def end(self, summary: dict, best_path: Path | None) -> None:
        pass


@hookimpl
def register_loggers(register):
    register(Component(name="metrics", description="metrics.jsonl and metrics.csv in the run directory (always on)",
                       build=MetricsLogger, options=MetricsOptions))
