"""One writer per run directory: the folder itself is flock-ed while a run writes it.

Two `tlzoo run --resume` of one directory would both append epochs to
metrics.jsonl and overwrite each other's checkpoints; so the process that
writes a run directory (a single process, or rank 0 of a distributed job)
holds an exclusive flock on the folder from before its first write to its
last, as the activation cache holds its build folders. The kernel drops the
lock when that process ends, however it ends, so a crash never blocks the next
run, and nothing is written into the run directory for it. A second writer is
refused at once, naming the directory and the live writer (its pid and
command, read from /proc/locks on Linux).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from tlzoo.errors import TlzooError


@contextlib.contextmanager
def writer_lock(run_dir: Path):
    """Hold `run_dir` as its one writer for the duration of the block; TlzooError when another holds it."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy_error(run_dir, holder_of(fd)) from None
        yield
    finally:
        os.close(fd)  # closing drops the lock


def check_free(run_dir: Path) -> None:
    """Refuse now, before anything starts, when another process writes `run_dir` (the lock is not kept)."""
    if run_dir.is_dir():
        with writer_lock(run_dir):
            pass


def busy_error(run_dir: Path, holder: str | None) -> TlzooError:
    who = f"process {holder}" if holder else "another process"
    return TlzooError(f"{run_dir} is being written by {who}: one run directory has one writer at a time",
                      "wait for that run to end, or stop it (SIGTERM or Ctrl-C saves a resumable checkpoint) and "
                      "then resume; to train beside it, start a new run")


def holder_of(fd: int) -> str | None:
    """'PID (COMMAND)' of the process holding a flock on the file behind `fd`, from /proc/locks; None if unknown."""
    stat = os.fstat(fd)
    wanted = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "FLOCK" in fields and len(fields) > 5 and fields[5] == wanted and fields[4].isdigit():
            pid = fields[4]
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                return pid
            return f"{pid} ({command.strip()[:200]})"
    return None
