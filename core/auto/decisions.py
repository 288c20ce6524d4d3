"""What `tlzoo train` decided and why: decisions.json, and the report section "How this model was chosen".

Every step of the search is a row: what was tried (or not), its validation
score, what it cost in seconds (measured; estimated for what was not started),
whether it was kept and the reason. The final run adds its own figures after it
has trained (`final`); the report, written by the engine at the end of that run,
shows the rows through tlzoo.report.sections, as data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

DECISIONS_FILE = "decisions.json"
SECTION_ID = "how-chosen"


@dataclass
class Row:
    step: str  # "speed", "probe", "head sweep", "fine-tune trial", "fold check", "final choice"
    candidate: str  # backbone, with the recipe where it matters
    val_top1: float | None  # on the validation split; None where nothing was scored
    seconds: float | None  # measured; None when the step did not run
    kept: bool
    reason: str
    estimate_s: float | None = None  # what the budget expected the step to cost


@dataclass
class Decisions:
    budget_s: float
    seed: int
    data: str  # the one-line summary
    machine: dict  # CPU, threads, precision
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chosen: dict | None = None  # backbone, recipe, spec
    final: dict | None = None  # the final run: directory, val and test top-1, seconds, the whole command's time

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def to_json(self) -> dict:
        return {"budget_s": self.budget_s, "seed": self.seed, "data": self.data, "machine": self.machine,
                "candidates": [asdict(row) for row in self.rows], "notes": self.notes, "chosen": self.chosen,
                "final": self.final}

    def report_section(self) -> dict:
        """A tlzoo.report.sections table: the rows as text, the notes below."""
        def score(value):
            return "-" if value is None else f"{value:.4f}"

        def cost(row: Row):
            if row.seconds is not None:
                return f"{row.seconds:.1f}"
            return "-" if row.estimate_s is None else f"(about {row.estimate_s:.0f})"

        chosen = self.chosen or {}
        paragraphs = [
            f"tlzoo train chose this model within a budget of {self.budget_s:.0f} s on {self.machine.get('cpu', '?')} "
            f"({self.machine.get('threads', '?')} threads, {self.machine.get('precision', '?')} frozen passes), "
            f"seed {self.seed}, measuring on the validation split only; the test split, if any, was read once "
            "the model below was fixed.",
            self.data,
        ]
        if chosen:
            paragraphs.append(f"Chosen: {chosen.get('backbone')}, {chosen.get('recipe')}.")
        return {
            "id": SECTION_ID,
            "title": "How this model was chosen",
            "paragraphs": paragraphs,
            "columns": ["step", "candidate", "val top-1", "seconds", "kept", "reason"],
            "rows": [[row.step, row.candidate, score(row.val_top1), cost(row), "yes" if row.kept else "no",
                      row.reason] for row in self.rows],
            "notes": list(self.notes),
        }
