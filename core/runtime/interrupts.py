"""Stopping cleanly on SIGTERM and Ctrl-C: save a resumable checkpoint when one is near, else stop at once.

Two situations, decided by `StopRequest.armed`:

- Inside the training loop (armed): the handler only records the request; the
  loop honours it at its next safe point (the end of the current step, or the
  end of the epoch when the signal came during validation), saves `last` there
  and raises `Interrupted`. The handler never saves anything itself, so a second
  signal cannot re-enter a save. If no safe point comes within the grace period
  (a cache build, a hung read), the request is escalated: the run stops at once
  and the last complete checkpoint stays as it was. The grace period is
  GRACE_FLOOR seconds or twice the longest gap seen between safe points,
  whichever is longer, so an ordinary step is never cut short.
- Everywhere else (reading the spec, the scan, evaluate, predict): there is
  nothing to save, so the handler raises `Interrupted` at once.

A second signal quits at once without saving: the save in progress, if any, is
abandoned, and the atomic write leaves the previous `last` whole. Whenever the
handler has raised, a backstop ends the process BACKSTOP_SECONDS later if it
is still inside the StopRequest (a thread stuck in a read keeps it from
unwinding). Exit codes follow the shell's convention, 128 + signal: 130 for
Ctrl-C, 143 for SIGTERM.

DataLoader workers never decide: `ignore_stop_signals` (their worker_init_fn)
makes them ignore both signals, so a signal sent to the whole process group
(`timeout`, `kill -- -PGID`, SLURM, Kubernetes) reaches the main process only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Callable

from tlzoo.errors import TlzooError

HANDLED = (signal.SIGINT, signal.SIGTERM)
GRACE_FLOOR = 10.0  # seconds an armed stop waits for a safe point, at least
BACKSTOP_SECONDS = 5.0  # after the handler raised, seconds before the process is ended outright


def signal_name(signum: int) -> str:
    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """A DataLoader worker_init_fn: the worker ignores SIGINT and SIGTERM (the main process decides).

    torch installs its own SIGTERM handler in each worker, which kills the worker
    and then the main process with "DataLoader worker is killed by signal"; this
    runs after it and replaces it. Workers still end with their parent.
    """
    for signum in HANDLED:
        signal.signal(signum, signal.SIG_IGN)


_watching_launcher = False


def stop_when_orphaned(interval: float = 1.0) -> None:
    """Under a launcher (torchrun, `tlzoo run --nproc`): SIGTERM this worker once its launcher is gone.

    torch starts each worker in a session of its own, so a launcher killed outright (SIGKILL, OOM) left
    its workers training and writing the run directory. A worker's parent is its launcher; when the
    parent changes the worker stops itself as the launcher's SIGTERM would have: every rank saves `last`
    at the same step (the stop request is agreed across ranks) and exits 143.
    """
    global _watching_launcher
    if _watching_launcher:
        return
    _watching_launcher = True
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="tlzoo-launcher-watch", daemon=True).start()


class Interrupted(TlzooError):
    """The run stopped on a signal; exits with 128 + the signal number."""

    def __init__(self, signum: int, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.signum = signum
        self.exit_code = 128 + signum


class StopRequest:
    """Signal handlers for the duration of a command; see the module docstring.

    `armed` is set by the training loop's guard once there is a state worth saving
    and the loop calls `stop()` at its safe points; while it is False a signal
    stops the command at once. `what` names the current activity for messages.
    """

    def __init__(self, stream=None, what: str = "before training started", grace_floor: float = GRACE_FLOOR,
                 backstop_seconds: float = BACKSTOP_SECONDS):
        self.stream = stream or sys.stderr
        self.what = what
        self.signum: int | None = None
        self.armed = False
        self.saving = False
        self.grace_floor = grace_floor
        self.backstop_seconds = backstop_seconds
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()
        self._last_safe_point: float | None = None
        self._longest_gap = 0.0
        self._escalating = False  # the grace period ran out; the next delivery of the signal stops at once
        self._reached = False  # a safe point came after the request
        self._lock = threading.Lock()
        self._inside = False
        self._timers: list[threading.Timer] = []  # grace timers; the backstop is never cancelled
        # under torchrun (tlzoo.runtime.distributed): `agree` takes this rank's signal number (0 for none) at
        # each safe point and returns the job's, so that every rank stops at the same step; a repeat of the
        # first signal within `duplicate_seconds` is the launcher forwarding what the terminal already sent
        self.agree: Callable[[int], int] | None = None
        self.duplicate_seconds = 0.0
        self._first_at = 0.0

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def grace(self) -> float:
        """Seconds an armed stop waits for the next safe point."""
        return max(self.grace_floor, 2 * self._longest_gap)

    def __enter__(self) -> "StopRequest":
        self._inside = True
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        self._inside = False
        for timer in list(self._timers):
            timer.cancel()
        self._timers.clear()
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        return False

    def _say(self, text: str) -> None:
        print(f"tlzoo: {text}", file=self.stream, flush=True)

    def _start_timer(self, seconds: float, action: Callable[[], None], cancellable: bool = True) -> None:
        timer = threading.Timer(seconds, action)
        timer.daemon = True  # never keeps the process alive by itself
        if cancellable:
            self._timers.append(timer)
        timer.start()

    def _handle(self, signum: int, frame) -> None:
        if os.getpid() != self._pid:
            return  # a forked child that kept the handler: the main process decides
        name = signal_name(signum)
        if signum == self.signum and time.monotonic() - self._first_at < self.duplicate_seconds:
            return
        if self._escalating:
            self._escalating = False
            if self._reached:
                return  # the safe point came just in time: it saves and stops
            self._raise_at_once(Interrupted(self.signum, (
                f"stopped by {signal_name(self.signum)}: no safe point came within {self.grace:.3g} s, so the run "
                "stopped at once without saving; the last complete checkpoint, if any, is kept as it was")))
        if self.signum is not None:
            what = "abandoning the checkpoint being written" if self.saving else "not saving"
            self._raise_at_once(Interrupted(signum, f"{name} again: stopped at once, {what}; the last complete "
                                                    "checkpoint is kept as it was"))
        self.signum, self._first_at = signum, time.monotonic()
        if not self.armed:
            self._raise_at_once(Interrupted(signum, f"stopped by {name} {self.what}; nothing to save"))
        self._say(f"{name} received: finishing the current step, saving a checkpoint, then stopping "
                  "(send it again to stop at once without saving)")
        self._start_timer(self.grace, self._escalate)

    def _raise_at_once(self, error: Interrupted) -> None:
        self._start_timer(self.backstop_seconds, lambda: self._end_process(error), cancellable=False)
        raise error

    def _escalate(self) -> None:
        """Timer thread: no safe point came in time; interrupt the main thread with the signal again."""
        with self._lock:
            if self._reached:
                return
            if self.saving:  # an epoch's checkpoint is being written: let it finish
                self._start_timer(1.0, self._escalate)
                return
            self._escalating = True
            signal.pthread_kill(threading.main_thread().ident, self.signum)  # also wakes a blocking system call

    def _end_process(self, error: Interrupted) -> None:
        """Timer thread, BACKSTOP_SECONDS after raising: end the process if it could not unwind or exit.

        Stuck means still inside the StopRequest, or in interpreter shutdown waiting for a thread
        (a scan thread in a read that never returns). A caller that caught the error and went on
        (a test, a notebook) is left alone.
        """
        shutting_down = getattr(threading, "_SHUTTING_DOWN", False) or not threading.main_thread().is_alive()
        if not (self._inside or shutting_down):
            return
        self._say(f"error: {error.message} (still running {self.backstop_seconds:.0f} s later, "
                  "probably in a stuck read; exiting now)")
        self.stream.flush()
        os._exit(error.exit_code)

    @contextlib.contextmanager
    def saving_checkpoint(self):
        """Marks a checkpoint write, so that a second signal says what it abandons."""
        self.saving = True
        try:
            yield
        finally:
            self.saving = False

    def stop(self, save: Callable[[], str], where: str, hint: str | None = None) -> None:
        """A safe point. If a stop was requested: run `save` (returns what was saved) and raise Interrupted."""
        now = time.monotonic()
        if self._last_safe_point is not None:
            self._longest_gap = max(self._longest_gap, now - self._last_safe_point)
        self._last_safe_point = now
        if self.agree is not None:
            agreed = self.agree(self.signum or 0)
            if agreed and self.signum is None:  # another rank was signalled: this one stops with it
                self.signum = agreed
        if self.signum is None:
            return
        with self._lock:
            self._reached = True  # the grace timer, if it fires now, does nothing
        with self.saving_checkpoint():
            saved = save()
        self.armed = False
        raise Interrupted(self.signum, f"stopped by {signal_name(self.signum)} {where}; {saved}", hint)
