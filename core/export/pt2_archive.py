"""What a .pt2 file may contain before tlzoo lets torch.export.load read it: an allow-list.

torch's loader runs code for many things a crafted archive can hold: pickled
weights (any truthy `use_pickle`), opaque constants (`pickle.loads`), legacy
`data/weights/*.pt` and `data/constants/*.pt` and sample inputs (both retried
with `weights_only=False`), an AOTInductor library, symbolic shapes (parsed
with sympy, which evaluates Python), guard code (compiled into the module) and
graph nodes calling any `torch.*` function or file-touching ATen operator
(`aten::save`, `aten::from_file`). So tlzoo accepts only what
`torch.export.save` writes for a plain model, and each entry only in its
plain form; anything else is refused before torch reads a byte. The caller
loads the very bytes checked here, so the file cannot change in between.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import torch

from tlzoo.errors import TlzooError

HINT = ("tlzoo loads only what `tlzoo export --format pt2` writes (raw tensors, never pickles or code); "
        "export the run again")

# Symbolic sizes as torch writes them (sympy's srepr): Symbol('s77', positive=True, integer=True), Integer(4), Mul(..)
_SYMBOL = re.compile(r"Symbol\('[a-z]+\d+'(?:, [a-z_]+=(?:True|False))*\)")
_INTEGER = re.compile(r"Integer\(-?\d+\)")
_EXPRESSION_REST = re.compile(r"(?:Mul|Add|Max|Min|FloorDiv|CeilToInt|FloorToInt|Mod|PythonMod|CleanDiv|[(), \d-])*")
# Python-level targets torch writes for shape arithmetic on the dynamic batch
_PLAIN_TARGETS = {f"_operator.{name}" for name in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg",
                                                   "eq", "ne", "lt", "le", "gt", "ge")} | \
    {f"torch.sym_{name}" for name in ("float", "int", "max", "min", "not", "ite", "sqrt", "sum")}
_ATEN = re.compile(r"torch\.ops\.aten\.(\w+)\.(\w+)")
# Text an ATen operator may take: mode words. `filename` (aten::save, aten::from_file) is not among them.
_TEXT_ARGUMENTS = {"approximate", "rounding_mode", "mode", "padding", "reduce", "interpolation", "indexing", "norm",
                   "ord", "side", "pad_mode", "padding_side", "equation", "assert_msg"}


def _as_is(_data: bytes) -> str | None:
    return None  # short text, or a raw tensor torch reads as flat storage of its config's dtype (never unpickled)


def _payload_config(stem: str):
    def check(data: bytes) -> str | None:
        try:
            entries = json.loads(data)["config"]
        except (ValueError, KeyError, TypeError):
            return "is not a payload config"
        if not isinstance(entries, dict):
            return "is not a payload config"
        for name, entry in entries.items():
            if not isinstance(entry, dict) or entry.get("use_pickle") is not False:
                return f"stores {name!r} as a pickle (use_pickle is {entry.get('use_pickle')!r}, not false)" \
                    if isinstance(entry, dict) else f"entry {name!r} is not an object"
            if not re.fullmatch(rf"{stem}_\d+", str(entry.get("path_name"))):
                return f"stores {name!r} as {entry.get('path_name')!r}, not a raw tensor ({stem}_N)"
            if not isinstance(entry.get("tensor_meta"), dict):
                return f"gives {name!r} no tensor description"
        return None
    return check


def _sample_inputs(data: bytes) -> str | None:
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception:
        return "is a pickle that does not load safely (weights_only)"
    return None


def _program(data: bytes) -> str | None:
    try:
        program = json.loads(data)
    except ValueError:
        return "is not JSON"
    if not isinstance(program, dict):
        return "is not a serialized program"
    if program.get("guards_code"):
        return "carries guard code (Python that torch would compile)"
    for found in _walk(program):
        if found:
            return found
    return None


def _walk(value):
    """Yields a reason for each unsafe expression or operator anywhere in the program."""
    if isinstance(value, dict):
        if "expr_str" in value:
            yield _expression(value["expr_str"])
        if "target" in value and "inputs" in value:
            yield _target(value["target"], value["inputs"])
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def _expression(text) -> str | None:
    rest = _INTEGER.sub("", _SYMBOL.sub("", text)) if isinstance(text, str) else None
    if rest is None or not _EXPRESSION_REST.fullmatch(rest):
        return f"has a symbolic size that is not plain arithmetic ({str(text)[:80]!r}; sympy would evaluate it)"
    return None


def _target(target, inputs) -> str | None:
    if target in _PLAIN_TARGETS:
        return None
    named = _ATEN.fullmatch(target) if isinstance(target, str) else None
    operator = getattr(getattr(torch.ops.aten, named.group(1), None), named.group(2), None) if named else None
    if operator is None:
        return f"calls {str(target)[:80]!r}, which is not an ATen operator"
    texts = [arg.name for arg in operator._schema.arguments if "str" in str(arg.type)]
    if any(name not in _TEXT_ARGUMENTS for name in texts):
        return f"calls {target}, which takes text other than a mode word ({', '.join(texts)})"
    return None


# Every entry of the archive, after its top folder, must match one of these.
_KINDS = [
    (re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"), _as_is),
    (re.compile(r"models/model\.json"), _program),
    (re.compile(r"data/weights/model_weights_config\.json"), _payload_config("weight")),
    (re.compile(r"data/constants/model_constants_config\.json"), _payload_config("tensor")),
    (re.compile(r"data/weights/weight_\d+|data/constants/tensor_\d+"), _as_is),
    (re.compile(r"data/sample_inputs/model\.pt"), _sample_inputs),
]
_REQUIRED = ("models/model.json", "data/weights/model_weights_config.json",
             "data/constants/model_constants_config.json")


def check(data: bytes, where: Path) -> None:
    """Refuse the archive unless every entry is a known safe kind in its safe form."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise TlzooError(f"{where} is not a torch.export archive",
                         "pass a file written by `tlzoo export --format pt2`") from None
    with archive:
        names = archive.namelist()
        if len(set(names)) != len(names):
            raise TlzooError(f"{where}: the archive holds two entries of one name", HINT)
        top = names[0].split("/", 1)[0] if names else ""
        inside = [name[len(top) + 1:] if name.startswith(top + "/") else None for name in names]
        for name, entry in zip(names, inside):
            checker = next((check for kind, check in _KINDS if entry is not None and kind.fullmatch(entry)), None)
            if checker is None:
                raise TlzooError(f"{where}: archive entry {name!r} is not something `tlzoo export` writes", HINT)
            reason = checker(archive.read(name))
            if reason:
                raise TlzooError(f"{where}: {name} {reason}", HINT)
        missing = [entry for entry in _REQUIRED if entry not in inside]
        if missing:
            raise TlzooError(f"{where}: the archive lacks {', '.join(missing)}", HINT)
