"""What a report is made of: the run directory's records, passed in by the caller, and per-image records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tlzoo.findings.issues import Findings
from tlzoo.report.records import ImageRecord
from tlzoo.report.sections import TableSection


@dataclass
class RunData:
    """The contents of one run directory (the engine reads the files; the report only renders)."""

    run_dir: Path
    spec: dict
    metrics: list[dict]
    summary: dict
    best: dict | None = None  # the best model's sidecar; None when no epoch became best
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (origin, reason)
    records: list[ImageRecord] = field(default_factory=list)  # per validation image, from the best model
    evaluated_on: str = "the run's validation split"
    findings: Findings | None = None  # what tlzoo.findings found in the run's data (findings.json)
    # `tlzoo report --data`: what the records are of ("images of photos/") and their metrics (images, top1, top5,
    # loss); None when the records are the run's own validation split, whose figures the summary holds
    other_data: dict | None = None
    sections: list[TableSection] = field(default_factory=list)  # added by a room above the engine (tlzoo.auto)

    @property
    def images_shown(self) -> str:
        """What the per-image sections are about, for headings."""
        return self.other_data["what"] if self.other_data else "validation images"

    @property
    def classes(self) -> list[str]:
        return list(self.summary.get("classes") or (self.best or {}).get("classes") or [])

    @property
    def confusion(self) -> list[list[int]]:
        """From the per-image records when there are any (they may be of other data), else the summary's."""
        if self.records:
            index = {name: i for i, name in enumerate(self.classes)}
            matrix = [[0] * len(index) for _ in index]
            for record in self.records:
                matrix[index[record.true]][index[record.predicted]] += 1
            return matrix
        return self.summary.get("confusion_matrix") or []
