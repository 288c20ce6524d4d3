"""`tlzoo serve`; cli/main.py imports this module to add it."""

from __future__ import annotations

from pathlib import Path

import typer

from tlzoo.cli.app import app, registry
from tlzoo.errors import TlzooError


@app.command()
def serve(
    model: Path = typer.Argument(..., help="a run directory written by `tlzoo run`, or a .onnx/.pt2 file from "
                                           "`tlzoo export`"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on; 0.0.0.0 opens it to the network "
                                                         "(there is no authentication)"),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="port (0 picks a free one)"),
    max_batch: int = typer.Option(32, "--max-batch", min=1, help="images per forward pass at most"),
    max_wait_ms: float = typer.Option(10.0, "--max-wait-ms", min=0.0,
                                      help="how long the oldest waiting image waits for others to share its pass"),
    top_k: int = typer.Option(5, "--top-k", min=1, help="classes per image when a request does not say (top_k)"),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.001,
                                        help="a request body larger than this is refused while it is read"),
    max_files: int = typer.Option(64, "--max-files", min=1, help="images in one request at most"),
    read_timeout: float = typer.Option(30.0, "--read-timeout", min=0.1,
                                       help="seconds a request body may take to arrive"),
    which: str = typer.Option("best", "--model", help="best or last (with a run directory)"),
    access_log: bool = typer.Option(False, "--access-log", help="log every request (uvicorn's access log)"),
):
    """Serve a model over HTTP: POST /predict, a web page at /, API docs at /docs.

    Requests that arrive within --max-wait-ms share one forward pass; answers equal
    `tlzoo predict` on the same files. Stops gracefully on SIGTERM or Ctrl-C.
    """
    from tlzoo.serve import require_serve

    require_serve()
    from tlzoo.serve.app import Settings
    from tlzoo.serve.server import serve as run_server

    if which not in ("best", "last"):
        raise TlzooError(f"--model {which!r}: choose 'best' or 'last'")
    settings = Settings(top_k=top_k, max_batch=max_batch, max_wait_ms=max_wait_ms, max_upload_mb=max_upload_mb,
                        max_files=max_files, read_timeout=read_timeout)
    run_server(model, registry(), host, port, settings, which=which, access_log=access_log)
