"""User errors: things the user must fix. The CLI prints them without a traceback."""

from __future__ import annotations


class TlzooError(Exception):
    """An error the user can fix; `hint` says how."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message + (f"\n  HINT: {self.hint}" if self.hint else "")


SHOWN_PROBLEMS = 50  # a spec's problems listed in full; the rest are counted


class SpecError(TlzooError):
    """A run spec with one or more problems, each with its dotted location."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "spec"):
        self.problems = problems
        self.source = source
        lines = [f"{len(problems)} problem(s) in {source}:"]
        lines += [f"  {loc or '(top level)'}: {msg}" for loc, msg in problems[:SHOWN_PROBLEMS]]
        if len(problems) > SHOWN_PROBLEMS:  # 30,000 bad augment ops should not print 30,000 lines
            lines.append(f"  ... and {len(problems) - SHOWN_PROBLEMS} more problem(s) not shown")
        super().__init__("\n".join(lines))


class WeightsError(TlzooError):
    """Weights that cannot be found, read or trusted."""
