"""Where tlzoo keeps what outlives a run on this machine: one answer for every cache."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_root() -> Path:
    """$TLZOO_CACHE_DIR, else $XDG_CACHE_HOME/tlzoo, else ~/.cache/tlzoo (empty variables count as unset)."""
    if os.environ.get("TLZOO_CACHE_DIR"):
        return Path(os.environ["TLZOO_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "tlzoo"
