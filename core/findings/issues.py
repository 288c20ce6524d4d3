"""What the findings are made of: one Issue per suspect image or pair, the class balance, and their files.

`issues.csv` has one row per issue (kind, paths, score, ...) so that a user can
edit it into a cleaned list; `findings.json` keeps everything, for the report.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field

KINDS = ("mislabelled", "leak", "duplicate", "outlier", "small_class")
CSV_COLUMNS = ["kind", "path", "split", "label", "suggested", "other_path", "other_split", "other_label",
               "score", "detail"]


@dataclass
class Issue:
    kind: str  # one of KINDS; a leak is a duplicate pair across two splits
    path: str  # the suspect image ('' for a class-level issue)
    split: str
    label: str  # its given label (the class, for small_class)
    score: float  # larger is more suspect; what it measures depends on the kind (see `detail`)
    detail: str  # the evidence in words
    suggested: str = ""  # mislabelled: the class the probe prefers
    other_path: str = ""  # a pair: the other image
    other_split: str = ""
    other_label: str = ""

    def to_row(self) -> list:
        return [getattr(self, column) if column != "score" else f"{self.score:.4f}" for column in CSV_COLUMNS]


@dataclass
class Balance:
    classes: list[str]
    counts: dict[str, list[int]]  # split name -> images per class
    weights: list[float]  # what class_weights "balanced" gives each class (training split)
    smallest: list[str]  # the smallest training classes, smallest first
    ratio: float | None  # largest / smallest training class (None when a class has none)


@dataclass
class Findings:
    issues: list[Issue]
    balance: Balance
    splits: dict[str, int]  # split name -> images looked at
    settings: dict  # the thresholds used, so that a reader knows what "flagged" meant
    notes: list[str] = field(default_factory=list)  # what could not be looked at, and why
    seconds: float = 0.0

    def of_kind(self, *kinds: str) -> list[Issue]:
        return [issue for issue in self.issues if issue.kind in kinds]

    def counts(self) -> dict[str, int]:
        return {kind: len(self.of_kind(kind)) for kind in KINDS}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Findings":
        fields = dict(data)
        fields["issues"] = [Issue(**issue) for issue in data.get("issues", [])]
        fields["balance"] = Balance(**data["balance"])
        return cls(**fields)


def issues_csv(findings: Findings) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(issue.to_row() for issue in findings.issues)
    return out.getvalue()


def findings_json(findings: Findings) -> str:
    return json.dumps(findings.to_json(), indent=1, allow_nan=False) + "\n"
