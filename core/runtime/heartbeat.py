"""A progress line every few seconds inside long loops, for logs that have no progress bar.

Outside a terminal (nohup, a notebook, CI) a run would otherwise print nothing
between the start and the end of an epoch, or during a cache build that takes
minutes. `TLZOO_PROGRESS_SECONDS` sets the interval (default 10; 0 switches the
lines off); the clock is passed in so that tests need not wait.
"""

from __future__ import annotations

import os
import time
from typing import Callable

ENV = "TLZOO_PROGRESS_SECONDS"
DEFAULT_SECONDS = 10.0


def interval_seconds() -> float:
    """The interval from the environment; a value that is not a number >= 0 falls back to the default."""
    try:
        value = float(os.environ.get(ENV, DEFAULT_SECONDS))
    except ValueError:
        return DEFAULT_SECONDS
    return value if value >= 0 else DEFAULT_SECONDS


class Heartbeat:
    """Calls `log(describe(done, total, elapsed))` when `every` seconds passed since the start or the last line."""

    def __init__(self, log: Callable[[str], None], total: int, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.log, self.total, self.clock = log, total, clock
        self.every = interval_seconds() if every is None else every
        self.started = self.last = clock()
        self.done = 0

    def advance(self, count: int, describe: Callable[[int, int, float], str]) -> None:
        self.done += count
        if self.every <= 0:
            return
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.log(describe(self.done, self.total, now - self.started))


def eta(done: int, total: int, elapsed: float) -> str:
    """'12 s, about 30 s left' for a loop that did `done` of `total` steps in `elapsed` seconds."""
    left = elapsed / done * (total - done) if done else None
    return f"{elapsed:.0f} s" + (f", about {left:.0f} s left" if left is not None and total > done else "")
