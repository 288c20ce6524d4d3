"""pydantic's errors as (dotted location, message) pairs, with did-you-mean and --set blame."""

from __future__ import annotations

import typing

from pydantic import BaseModel, ValidationError


def shorten(text: str, limit: int = 60) -> str:
    """Long user text cut for messages."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def format_loc(loc: tuple) -> str:
    return ".".join(shorten(str(part)) for part in loc)


def problems_from(error: ValidationError, prefix: tuple = (), model: type[BaseModel] | None = None
                  ) -> list[tuple[str, str]]:
    """pydantic's errors as (dotted location, message); `model` is the one validated, for did-you-mean."""
    out = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if part not in ("function-after", "function-before"))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden" and model is not None and loc and isinstance(loc[-1], str):
            close = _close_field(loc[-1], _fields_at(model, loc[:-1]))
            if close:
                message += f". Did you mean: {', '.join(close)}?"
        out.append((format_loc(prefix + loc), message))
    return out


def _close_field(name: str, fields: list[str]) -> list[str]:
    from tlzoo.registry.catalog import closest

    return closest(name, fields) if len(name) <= 200 else []


def _fields_at(model: type[BaseModel], path: tuple) -> list[str]:
    """The field names of the model found at `path` inside `model` (list indices skipped)."""
    current: type[BaseModel] | None = model
    for part in path:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if current else None
        current = _model_in(field.annotation) if field else None
    return list(current.model_fields) if current else []


def _model_in(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def blame_overrides(problems: list[tuple[str, str]], overrides: list[str]) -> list[tuple[str, str]]:
    """A problem at a field that a --set wrote is shown as that override's, not the file's."""
    keys = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key:
            keys.append((key, item))
    out = []
    for loc, message in problems:
        for key, item in reversed(keys):  # the last --set of a key is the one that counts
            if loc == key or loc.startswith(key + ".") or key.startswith(loc + "."):
                loc = f"--set {shorten(item)}: {loc}"
                break
        out.append((loc, message))
    return out


def dedupe(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(problems))
