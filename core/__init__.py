"""tlzoo: transfer learning of image classifiers from one JSON spec.

`import tlzoo` gives the Python API (README.md, "Python API"): tlzoo.train, tlzoo.run,
tlzoo.load, tlzoo.list_backbones, the RunResult and Model they return, and
tlzoo.TlzooError, the one error type they raise for what a user can fix. They
live in tlzoo.api and are looked up on first use, so importing tlzoo stays
cheap: no torch until a function needs it. The rooms below this package are its
architecture; see README.md ("Layout").
"""

import importlib

from tlzoo.errors import TlzooError
from tlzoo.version import __version__

_API = ("run", "train", "load", "list_backbones", "RunResult", "Model")

__all__ = ["__version__", "TlzooError", *_API]


def __getattr__(name: str):
    if name in _API:
        # imported by name, not by an import statement: tlzoo.api sits above this package's rooms
        return getattr(importlib.import_module("tlzoo.api"), name)
    if name == "export":  # tlzoo.export(run_dir, ...) without importing the room first
        return importlib.import_module("tlzoo.export")
    raise AttributeError(f"module 'tlzoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
