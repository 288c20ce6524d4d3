"""A dataset reader for JSON Lines lists: one {"path": ..., "label": ...} object per line.

Paths inside a list are relative to the list file. A line that is not such an
object is reported as a problem with its file and line number, never dropped
silently; tlzoo then decides (data.bad_files) whether that stops the run.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class JsonlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: str = Field(..., description="JSON Lines file listing the training images")
    val: str = Field(..., description="JSON Lines file listing the validation images")
    classes: list[str] | None = Field(None, description="class order (default: sorted labels)")


def _list_file(base_dir: Path, value: str, field: str) -> Path:
    from tlzoo.errors import TlzooError

    path = Path(value).expanduser()
    path = path if path.is_absolute() else Path(base_dir) / path
    if not path.is_file():
        raise TlzooError(f"data.reader.options.{field}: list file {path} does not exist",
                         f"fix the path; relative paths start from the spec file's folder ({base_dir})")
    return path


def parse_line(text: str, where: str, folder: Path):
    """(Sample, None) for a good line, (None, Problem) for a bad one."""
    from tlzoo.data.samples import Problem, Sample

    try:
        item = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, Problem(where, f"not JSON: {exc.msg} at column {exc.colno}")
    if not isinstance(item, dict):
        return None, Problem(where, "expected an object with \"path\" and \"label\"")
    path, label = item.get("path"), item.get("label")
    if not isinstance(path, str) or not path:
        return None, Problem(where, "\"path\" is missing or not a string")
    if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
        return None, Problem(where, "\"label\" is missing or is neither a string nor an integer")
    full = Path(path).expanduser()
    return Sample(full if full.is_absolute() else folder / full, label, where), None


def read_list(path: Path):
    samples, problems = [], []
    text = path.read_text(encoding="utf-8-sig")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        sample, problem = parse_line(line, f"{path}:{number}", path.parent)
        if sample is not None:
            samples.append(sample)
        else:
            problems.append(problem)
    return samples, problems


def read_jsonl(options: JsonlOptions, base_dir: Path):
    from tlzoo.data.samples import ReaderOutput

    train, train_problems = read_list(_list_file(base_dir, options.train, "train"))
    val, val_problems = read_list(_list_file(base_dir, options.val, "val"))
    return ReaderOutput(train=train, val=val, classes=options.classes, problems=train_problems + val_problems)
