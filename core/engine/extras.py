"""What a room above the engine adds to one run, handed down as data (the engine never imports it).

`tlzoo train` (tlzoo.auto) runs its trials and its final model through the
engine's `run_spec`; it adds its decisions file, the report section that
explains them, a deadline that ends training when the time budget runs out,
for trials the data it has already read and scanned, and for a final run the
trial whose trained epochs it takes over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tlzoo.report.sections import SECTIONS_FILE
from tlzoo.rundir import outputs


@dataclass
class RunExtras:
    files: dict[str, object] = field(default_factory=dict)  # JSON files written beside spec.json
    report_sections: list[dict] = field(default_factory=list)  # tlzoo.report.sections dicts, shown in report.html
    epoch_hooks: list[Callable] = field(default_factory=list)  # (trainer, record) after each epoch, after the run's
    data: object = None  # a LabelledData already read and scanned for exactly this spec's reader: no second scan
    # a finished run of this very training (a trial): its epochs are taken over, not trained again
    # (tlzoo.engine.adopt); its spec may differ from this run's in tlzoo.engine.adopt.ADOPTABLE_CHANGES only
    adopt: Path | None = None

    def file_names(self) -> list[str]:
        return list(self.files) + ([SECTIONS_FILE] if self.report_sections else [])

    def write(self, run_dir: Path) -> None:
        for name, value in self.files.items():
            outputs.write_json(run_dir / name, value)
        if self.report_sections:
            outputs.write_json(run_dir / SECTIONS_FILE, self.report_sections)
