"""`tlzoo report`: the HTML report of a run directory; cli/main.py imports this module to add it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tlzoo.cli.app import app, registry
from tlzoo.errors import TlzooError


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a run directory written by `tlzoo run`"),
    data: Optional[Path] = typer.Option(None, "--data", help="a folder of class sub-folders to evaluate on "
                                                             "(default: the run's validation split)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="the HTML file (default: RUN_DIR/report.html); "
                                                                 "figures are written beside it as PNG"),
    top_losses: int = typer.Option(16, "--top-losses", min=0, help="images with the highest loss to show"),
    which: str = typer.Option("best", "--model", help="best or last"),
):
    """Write a self-contained HTML report: curves, confusion matrix, per-class table, top losses."""
    from tlzoo.engine.evaluation import evaluate_run
    from tlzoo.engine.inference import load_run
    from tlzoo.engine.reporting import write_run_report

    if which not in ("best", "last"):
        raise TlzooError(f"--model {which!r}: choose 'best' or 'last'")
    if out is not None and out.is_dir():
        raise TlzooError(f"--out {out} is a folder", "pass the HTML file to write, e.g. --out report.html")
    loaded = load_run(run_dir, registry(), which)
    result, _ = evaluate_run(loaded, registry(), data)
    where = f"{data} ({which} model)" if data is not None else f"the run's validation split ({which} model)"
    other = None if data is None else {"what": f"images of {data}", "images": result.count, "top1": result.top1,
                                       "top5": result.top5, "loss": result.loss}
    path = write_run_report(run_dir, result.extra["records"], out, top_losses, evaluated_on=where, other_data=other)
    typer.echo(str(path))
