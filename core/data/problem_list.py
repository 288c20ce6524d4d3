"""How a message lists many problems: the first few, one a line, then how many more."""

from __future__ import annotations

SHOWN = 10  # problems listed in an error message; the rest are counted


def listed(lines: list[str]) -> str:
    shown = [f"  {line}" for line in lines[:SHOWN]]
    if len(lines) > SHOWN:
        shown.append(f"  ... and {len(lines) - SHOWN} more")
    return "\n".join(shown)
