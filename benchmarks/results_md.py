"""benchmarks/RESULTS.md, where each benchmark script prints and appends its section."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def publish(text: str, append: bool = True) -> None:
    """Print a section; append it to RESULTS.md unless the script was told not to (--no-append)."""
    print(text)
    if append:
        with RESULTS.open("a") as handle:
            handle.write(text)
