"""skipped.txt: the inputs a run skipped, and why, one escaped line each."""

from __future__ import annotations

from pathlib import Path

from tlzoo.data.escaping import line_safe
from tlzoo.data.samples import Problem


def write_skipped(problems: list[Problem], path: Path, when: str = "before training") -> bool:
    """Write one 'origin<TAB>reason' line per skipped input (a header line first), only when there is one.

    Names are escaped (tlzoo.data.escaping.line_safe), so a newline or tab in a file name cannot split or
    forge a line. Returns whether the file was written.
    """
    if not problems:
        return False
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {len(problems)} input(s) skipped {when}: origin<TAB>reason (names escaped as in Python strings)"]
    lines += [f"{line_safe(problem.origin)}\t{line_safe(problem.reason)}" for problem in problems]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return True
