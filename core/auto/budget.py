"""The time budget of `tlzoo train`, a promise: the whole command ends within it (plus 10 %).

The clock starts when the process started (the interpreter, imports and the
data scan count), or when `tlzoo.train()` was called. Two ledgers decide
whether a step may start:

- the clock itself (`elapsed`): what keeps the promise;
- the plan (`planned`): what the search had spent when it measured this
  machine, plus each started step's *estimated* cost. A warm activation cache
  makes steps faster than estimated; charging estimates keeps the choices the
  same as on a cold run, so a second identical command chooses the same model.

A step starts only if both ledgers can pay for it and still keep `reserve`
seconds (the final run's estimate) free.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from typing import Callable

from tlzoo.errors import TlzooError

UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|min|m|sec|s)?")
MIN_BUDGET_S = 30.0  # starting up, reading the data and timing one backbone take 10-20 s on 2 cores
MAX_BUDGET_S = 7 * 24 * 3600.0
OVERRUN = 0.10  # the promise: the command ends within the budget plus this fraction


def parse_duration(text: str | float | int, option: str = "--time") -> float:
    """Seconds from '10m', '90s', '1h30m', '1.5h' or a bare number of seconds. `option` names the setting in
    errors: '--time' for the CLI, 'time' for tlzoo.train()."""
    bare = isinstance(text, (int, float)) and not isinstance(text, bool)
    if bare:
        seconds = float(text)
    else:
        value = str(text).strip().lower().replace(" ", "")
        parts = DURATION.findall(value)
        if not value or "".join(number + unit for number, unit in parts) != value:
            raise TlzooError(f"{setting(option, text)} is not a duration",
                             f"write it as {setting(option, '10m')}, 90s, 1h30m or 600 (seconds)")
        seconds = sum(float(number) * UNITS[unit or "s"] for number, unit in parts)
        bare = all(not unit for _, unit in parts)
    if not MIN_BUDGET_S <= seconds <= MAX_BUDGET_S:
        meant = (f"a bare number counts seconds: {setting(option, f'{text}m')} is {text} minutes; "
                 if bare and 0 < seconds < 60 else "")
        raise TlzooError(f"{setting(option, text)}: the budget must be between {MIN_BUDGET_S:g} s and 7 days",
                         meant + f"a first model needs a minute or more on a CPU; try {setting(option, '10m')}")
    return seconds


def setting(option: str, value) -> str:
    """How the user wrote it: `--time '10'` on the command line, `time='10'` in Python."""
    return f"{option} {shlex.quote(str(value))}" if option.startswith("-") else f"{option}={value!r}"


def process_age() -> float:
    """Seconds since this process started (Linux: /proc), 0 where that cannot be read."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22, counted after the ")" that ends the command name
        with open("/proc/uptime", encoding="ascii") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def clock_text(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Budget:
    """`seconds` of wall time from `already` seconds ago (the process's age for the CLI)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic, already: float = 0.0):
        self.seconds = float(seconds)
        self.clock = clock
        self.started = clock() - already
        self.planned: float | None = None  # None until the machine was measured: then it tracks the plan

    def elapsed(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    @property
    def deadline(self) -> float:
        """The clock reading at which the budget is spent."""
        return self.started + self.seconds

    def start_plan(self) -> None:
        """From now on, steps are also charged their estimates (see the module docstring)."""
        self.planned = self.elapsed()

    def planned_left(self) -> float:
        return self.seconds - (self.planned if self.planned is not None else self.elapsed())

    def available(self) -> float:
        """Seconds left by the tighter ledger: what a step may still be planned into."""
        return min(self.left(), self.planned_left())

    def shortfall(self, estimate: float, reserve: float = 0.0) -> float:
        """Seconds missing to pay `estimate` now and keep `reserve` free, by the tighter ledger; <= 0: affordable."""
        return estimate + reserve - self.available()

    def affords(self, estimate: float, reserve: float = 0.0) -> bool:
        return self.shortfall(estimate, reserve) <= 0

    def charge(self, estimate: float) -> None:
        """A step started: its estimate goes on the plan."""
        if self.planned is not None:
            self.planned += estimate

    def status(self) -> str:
        return f"{clock_text(self.elapsed())} of {clock_text(self.seconds)} used, {clock_text(self.left())} left"
