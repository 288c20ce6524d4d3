"""How tlzoo writes a file into a run directory: whole or not at all, and as valid JSON.

A file is written to a temporary name in the same folder (ending TMP_SUFFIX, so a
crashed write can be found and removed), fsynced, renamed over the old one, and
the folder is fsynced: readers see the old file or the new one, never a torn one.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
from pathlib import Path

from tlzoo.errors import TlzooError

TMP_SUFFIX = ".tmp"  # every temporary file tlzoo writes into a run directory ends so
_counter = itertools.count()


def json_safe(value):
    """NaN and infinities become null (JSON has no spelling for them); tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, whole.

    A failed write (full disk, quota, read-only folder) is a TlzooError naming the
    file; the previous file, if any, is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_counter)}{TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:  # also KeyboardInterrupt: never leave a half-written temporary behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise
    fsync_dir(path.parent)


def write_error(path: Path, exc: OSError) -> TlzooError:
    """What a user reads when a file of a run directory cannot be written."""
    reason = exc.strerror or str(exc)
    kept = f"the previous {path.name} is kept" if path.exists() else f"{path.name} was not written"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = (f"free space on the disk holding {path.parent} (or pass --output on another disk), "
                f"then continue with: tlzoo run --resume {path.parent}")
    else:
        hint = f"check that {path.parent} is writable"
    return TlzooError(f"cannot write {path}: {reason}; {kept}", hint)
