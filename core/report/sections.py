"""Report sections that a room above the engine adds to a run's report, as plain data.

The engine cannot import what sits above it (`tlzoo train`'s search lives in
tlzoo.auto), so such a room hands the engine a section as a JSON-ready dict:

    {"id": "how-chosen", "title": "How this model was chosen",
     "paragraphs": ["..."], "columns": ["candidate", ...], "rows": [["...", ...]], "notes": ["..."]}

The engine writes the list to SECTIONS_FILE in the run directory (so `tlzoo
report` renders them again) and the page shows each after "The run at a glance".
Every value is shown as text; nothing in a section is markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tlzoo.errors import TlzooError

SECTIONS_FILE = "report_sections.json"


@dataclass(frozen=True)
class TableSection:
    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "paragraphs": self.paragraphs, "columns": self.columns,
                "rows": self.rows, "notes": self.notes}


def _texts(value, what: str) -> list[str]:
    if not isinstance(value, list):
        raise TlzooError(f"report section: {what} is not a list", "the run directory's report_sections.json is damaged")
    return [str(item) for item in value]


def section_from_json(value) -> TableSection:
    """A TableSection from its dict, every cell as text; a damaged one is a TlzooError naming the field."""
    if not isinstance(value, dict) or not isinstance(value.get("title"), str):
        raise TlzooError("report section without a title", "the run directory's report_sections.json is damaged")
    columns = _texts(value.get("columns", []), "columns")
    rows = [_texts(row, "a row") for row in value.get("rows", [])]
    if any(len(row) != len(columns) for row in rows):
        raise TlzooError(f"report section {value['title']!r}: a row's cells do not match its {len(columns)} columns",
                         "the run directory's report_sections.json is damaged")
    return TableSection(str(value.get("id") or "section"), value["title"],
                        _texts(value.get("paragraphs", []), "paragraphs"), columns, rows,
                        _texts(value.get("notes", []), "notes"))
