"""`tlzoo serve`: a trained model behind HTTP, with dynamic batching and a web page.

It sits above the predict paths (tlzoo.engine.inference, tlzoo.export.predicting)
and runs theirs, so its answers equal `tlzoo predict` on the same files; cli
starts it. The modules, bottom up: uploads (reading request bodies), metrics
(Prometheus text), batcher (requests share forward passes), served (the model
and what /info says), app (the FastAPI routes and pages), server (uvicorn,
signals).
"""

from __future__ import annotations

import importlib.util

from tlzoo.errors import TlzooError

NEEDS = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}


def require_serve() -> None:
    """`tlzoo serve`'s packages come with the extra tlzoo[serve]; without them, say so (not a traceback)."""
    missing = [package for module, package in NEEDS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise TlzooError(f"`tlzoo serve` needs {', '.join(missing)}, which is not installed",
                         "pip install 'tlzoo[serve]'")
