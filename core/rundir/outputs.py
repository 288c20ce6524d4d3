"""The run directory: spec.json, metrics.jsonl, best/last weights with JSON sidecars, summary.json.

Weights are safetensors and everything else is JSON: nothing in a run
directory is a pickle. Files are written to a temporary name, flushed to disk
and renamed, so a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from tlzoo.errors import TlzooError
from tlzoo.rundir.writing import TMP_SUFFIX, atomic_write, json_safe, write_error

SPEC_FILE = "spec.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
SKIPPED_FILE = "skipped.txt"


def make_folder(path: Path, what: str, exist_ok: bool = True) -> None:
    """mkdir with parents; a folder that cannot be made (read-only, no such device, a file in the way) is an
    error naming `what` the user passed."""
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        if path.is_dir():  # another run made it this moment: the caller picks another name
            raise
        raise TlzooError(f"cannot create the run directory {path} ({what}): a file of that name is in the way",
                         f"set {what} to another folder, or move the file") from None
    except OSError as exc:
        raise TlzooError(f"cannot create the run directory {path} ({what}): {exc.strerror or exc}",
                         f"set {what} to a folder you can write") from None


def new_run_dir(output_root: Path, name: str) -> Path:
    """`output_root/name`, or name-2, name-3, ... when taken."""
    make_folder(output_root, "the spec's `output`")
    candidate, number = output_root / name, 1
    while candidate.exists():
        number += 1
        candidate = output_root / f"{name}-{number}"
    make_folder(candidate, "the spec's `output`", exist_ok=False)
    return candidate


def claim_run_dir(path: Path) -> Path:
    """An explicit --output: created if missing, refused if it already holds files."""
    refuse_taken(path)
    make_folder(path, "--output")
    return path


def refuse_taken(path: Path) -> None:
    """Refuse an --output that is a file or a folder that already holds files (see `occupied`)."""
    if path.exists() and not path.is_dir():
        raise TlzooError(f"--output {path} is a file, not a folder", "pass a folder for the run directory")
    if path.is_dir() and any(path.iterdir()):
        raise occupied(path)


def stopped_run(path: Path) -> bool:
    """A run directory with a checkpoint but no summary: killed (or its machine stopped) before its end."""
    return (path / SPEC_FILE).is_file() and (path / "last.json").is_file() and not (path / SUMMARY_FILE).exists()


def occupied(path: Path) -> TlzooError:
    """The error for an --output that already holds files; one that holds a run stopped before its end (killed,
    a power cut) says how to finish it, since running the same command again is what a user tries first."""
    hint = "pass a new or empty folder, or leave --output out to get a fresh run directory"
    if stopped_run(path):
        return TlzooError(f"--output {path} holds a run that stopped before its end",
                          f"finish it with: tlzoo run --resume {path}; or {hint}")
    return TlzooError(f"--output {path} already holds files", hint)


# what tlzoo itself writes into a run directory before its first checkpoint
RUN_FILES = (SPEC_FILE, METRICS_FILE, SUMMARY_FILE, SKIPPED_FILE, "resumes.jsonl", "best.json", "last.json")


def remove_unfinished(run_dir: Path, remove_folder: bool, extra_files=()) -> None:
    """After a run failed before any checkpoint: remove the files it wrote (RUN_FILES and `extra_files`, those
    a caller asked it to write), and the folder if it made it.

    A folder holding best or last weights is kept whole (it can be evaluated or resumed);
    files tlzoo did not write are never touched.
    """
    if any((run_dir / f"{stem}.safetensors").exists() for stem in ("best", "last")):
        return
    for path in [run_dir / name for name in (*RUN_FILES, *extra_files)] + list(run_dir.glob(f"*{TMP_SUFFIX}")):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            return
    if remove_folder:
        try:
            run_dir.rmdir()  # only if empty
        except OSError:
            pass


def dumps(value) -> str:
    return json.dumps(json_safe(value), indent=2, allow_nan=False)


def write_json(path: Path, value) -> None:
    atomic_write(path, (dumps(value) + "\n").encode())


def append_jsonl(path: Path, value: dict) -> None:
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(json_safe(value), allow_nan=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:  # a torn last line is rewritten from `last` on resume
        raise write_error(path, exc) from None


def read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TlzooError(f"{path} is missing", f"is {path.parent} a tlzoo run directory? ({what})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise TlzooError(f"cannot read {path}: {exc}", f"the run directory's {what} is damaged") from None


def spec_hash(spec_json: dict) -> str:
    text = json.dumps(spec_json, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in ("tlzoo", "torch", "torchvision", "timm", "safetensors", "pillow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def resolved_spec_json(resolved) -> dict:
    """The spec as it ran: defaults filled in, each component's options validated.

    It validates again as it is (`tlzoo evaluate`, `tlzoo run RUN/spec.json`):
    `base_dir` keeps relative paths pointing where they pointed, and options whose
    defaults cannot be written out (imagefolder's `val` beside `val_split`) are
    saved as the user set them.
    """
    data = resolved.spec.model_dump(mode="json")
    data["base_dir"] = str(resolved.base_dir)
    data["backbone"]["options"] = storable_options(resolved.backbone.options)
    data["data"]["reader"]["options"] = storable_options(resolved.reader.options)
    data["train"]["strategy"]["options"] = storable_options(resolved.strategy.options)
    return data


def storable_options(options) -> dict:
    """Options with their defaults when those validate to the same options; else only the fields set."""
    from pydantic import ValidationError

    full = options.model_dump(mode="json")
    try:
        if type(options).model_validate(full).model_dump(mode="json") == full:
            return full
    except ValidationError:
        pass
    return options.model_dump(mode="json", exclude_unset=True)
