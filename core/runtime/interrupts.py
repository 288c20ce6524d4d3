"""Stopping a run cleanly: SIGTERM and Ctrl-C save a resumable checkpoint, then exit.

A signal handler only records the request; the training loop honours it at a
safe point (the end of the current step, or the end of the epoch when the
signal came during validation), saves `last` there and raises `Interrupted`.
The handler never saves anything itself, so a second signal cannot re-enter a
save. A second signal quits at once without saving: the save in progress, if
any, is abandoned, and the atomic write leaves the previous `last` whole.
Exit codes follow the shell's convention, 128 + signal: 130 for Ctrl-C,
143 for SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Callable

from tlzoo.errors import TlzooError

HANDLED = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name


class Interrupted(TlzooError):
    """The run stopped on a signal; exits with 128 + the signal number."""

    def __init__(self, signum: int, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.signum = signum
        self.exit_code = 128 + signum


class StopRequest:
    """Signal handlers that ask the loop to stop at the next safe point.

    Use as a context manager around the run. While `armed` is False (before
    there is a training state worth saving) a signal stops the run at once.
    """

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.signum: int | None = None
        self.armed = False
        self.saving = False
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        return False

    def _say(self, text: str) -> None:
        print(f"tlzoo: {text}", file=self.stream, flush=True)

    def _handle(self, signum: int, frame) -> None:
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker: the main process decides, the worker keeps loading
        name = signal_name(signum)
        if self.signum is not None:
            what = "abandoning the checkpoint being written" if self.saving else "not saving"
            raise Interrupted(signum, f"{name} again: stopped at once, {what}; the last complete checkpoint is "
                                      "kept as it was")
        self.signum = signum
        if not self.armed:
            raise Interrupted(signum, f"stopped by {name} before training started; nothing to save")
        self._say(f"{name} received: finishing the current step, saving a checkpoint, then stopping "
                  "(send it again to stop at once without saving)")

    @contextlib.contextmanager
    def saving_checkpoint(self):
        """Marks a checkpoint write, so that a second signal says what it abandons."""
        self.saving = True
        try:
            yield
        finally:
            self.saving = False

    def stop(self, save: Callable[[], str], where: str, hint: str | None = None) -> None:
        """If a stop was requested: run `save` (returns what was saved) and raise Interrupted."""
        if self.signum is None:
            return
        with self.saving_checkpoint():
            saved = save()
        self.armed = False
        raise Interrupted(self.signum, f"stopped by {signal_name(self.signum)} {where}; {saved}", hint)
