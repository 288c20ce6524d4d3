"""`tlzoo cache info` and `tlzoo cache clear`: what the activation cache holds, and emptying it.

The facts come from tlzoo.cache.store.list_entries; the cache folder is the one
runs use by default ($TLZOO_CACHE_DIR, else $XDG_CACHE_HOME/tlzoo or ~/.cache/tlzoo)
unless --dir names another (a spec's cache.dir).
"""

from __future__ import annotations

import fnmatch
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Optional

import typer

from tlzoo.cli.app import app
from tlzoo.errors import TlzooError

cache_app = typer.Typer(no_args_is_help=True, help="Show or clear the cache of frozen-layer activations.")
app.add_typer(cache_app, name="cache")

DIR_HELP = "cache folder (default: $TLZOO_CACHE_DIR, else $XDG_CACHE_HOME/tlzoo or ~/.cache/tlzoo)"


def activations_folder(folder: Optional[Path]) -> Path:
    from tlzoo.runtime.paths import default_cache_root

    return (folder.expanduser() if folder is not None else default_cache_root()) / "activations"


def mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


@cache_app.command("info")
def info(folder: Optional[Path] = typer.Option(None, "--dir", help=DIR_HELP)):
    """Size and entries of the activation cache, by backbone."""
    from tlzoo.cache.store import folder_bytes, list_entries, pending_builds

    root = activations_folder(folder)
    entries = list_entries(root)
    typer.echo(f"cache: {root}")
    typer.echo(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {mib(sum(e.nbytes for e in entries))}")
    by_backbone: dict[str, list] = defaultdict(list)
    for entry in entries:
        by_backbone[entry.backbone].append(entry)
    for backbone, group in sorted(by_backbone.items()):
        typer.echo(f"  {backbone}: {len(group)} entr{'y' if len(group) == 1 else 'ies'}, "
                   f"{mib(sum(e.nbytes for e in group))}")
    building = pending_builds(root)
    if building:
        typer.echo(f"{len(building)} build(s) in progress or killed, {mib(sum(folder_bytes(p) for p in building))}")


def no_entry_matches(pattern: str, root: Path, entries: list) -> TlzooError:
    held = sorted({entry.backbone for entry in entries})
    if not held:
        return TlzooError(f"no cache entry matches {pattern!r}: {root} holds no entries", "nothing to clear")
    return TlzooError(f"no cache entry matches {pattern!r} in {root}",
                      f"patterns are shell-style and match a whole backbone name or key; the cache holds "
                      f"entries of {', '.join(held[:8])}{' and more' if len(held) > 8 else ''} (tlzoo cache info)")


@cache_app.command("clear")
def clear(pattern: Optional[str] = typer.Argument(None, help="only entries whose backbone or key matches this "
                                                             "glob, e.g. 'timm/resnet*'"),
          folder: Optional[Path] = typer.Option(None, "--dir", help=DIR_HELP)):
    """Remove cached activations (all, or those of matching backbones); builds in progress are left alone."""
    from tlzoo.cache.store import list_entries, remove_dead_builds, remove_idle_locks

    root = activations_folder(folder)
    entries = list_entries(root)
    chosen = [e for e in entries
              if pattern is None or fnmatch.fnmatchcase(e.backbone, pattern) or fnmatch.fnmatchcase(e.key, pattern)]
    if pattern is not None and not chosen:  # as `tlzoo list backbones PATTERN`: an empty match is a user error
        raise no_entry_matches(pattern, root, entries)
    for entry in chosen:  # a run that has an entry mapped keeps reading it: unlinked files live on until closed
        shutil.rmtree(entry.path, ignore_errors=True)
    dead = remove_dead_builds(root) if pattern is None else []
    if pattern is None:
        remove_idle_locks(root)
    freed = sum(e.nbytes for e in chosen)
    typer.echo(f"removed {len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'} ({mib(freed)}) from {root}"
               + (f" and {len(dead)} killed build(s)" if dead else ""))
