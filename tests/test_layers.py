"""The rooms of core/ and the one direction their imports point.

cli -> (auto, serve) -> (export, probe) -> engine -> (cache, rundir, report) -> findings -> spec -> data -> model -> (runtime, trust) -> errors.
A module may import its own room and any lower one, never a higher one or one
beside it; imports inside functions count too (a lazy import is still a
dependency). Modules of one room must not import each other in a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

CORE = REPO / "core"
LEVEL = {
    "errors": 0, "version": 0, "runtime": 1, "model": 2, "data": 3, "spec": 4,
    "trust": 1,  # pure calibration and OOD-score math; the engine fits it, the report, export and predict read it
    "findings": 4.5,  # pure math on features the caller passes in; the report renders it, the engine runs it
    "cache": 5, "rundir": 5, "report": 5, "engine": 6, "export": 7, "probe": 7, "auto": 8, "serve": 8, "cli": 9,
    "__init__": 10, "__main__": 10, "api": 10,  # the public face sits on top
}


def room_of(module: str) -> str | None:
    """'tlzoo.data.images' -> 'data'; None for modules outside core/ (registry, plugins, third party)."""
    parts = module.split(".")
    if parts[0] != "tlzoo":
        return None
    if len(parts) == 1:
        return "__init__"
    if parts[1] in ("registry", "plugins"):
        return None
    return parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(CORE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["tlzoo", *parts])


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; tlzoo's modules import absolutely"
            found.add(node.module)
            # `from tlzoo.rundir import outputs` depends on tlzoo.rundir.outputs
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in CORE.rglob("*.py") if "__pycache__" not in p.parts}


def test_every_room_has_a_level():
    rooms = {room_of(name) for name in core_modules()}
    assert rooms <= set(LEVEL), f"rooms without a level in this test: {rooms - set(LEVEL)}"


def test_imports_point_down_only():
    upward = []
    for name, path in core_modules().items():
        here = room_of(name)
        for target in imports_of(path):
            there = room_of(target)
            if there is None or there == here or target not in core_modules() and there not in LEVEL:
                continue
            if LEVEL[there] >= LEVEL[here]:
                upward.append(f"{name} ({here}) imports {target} ({there})")
    assert not upward, "imports that climb or go sideways:\n" + "\n".join(sorted(upward))


def test_no_import_cycles_between_modules():
    modules = core_modules()
    graph = {name: {t for t in imports_of(path) if t in modules and t != name} for name, path in modules.items()}
    # a package's __init__ importing its own submodules is how packages re-export, not a cycle
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
