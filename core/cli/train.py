"""`tlzoo train DATA`: the spec chosen by measurement within a time budget; cli/main.py imports this module."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from tlzoo.cli.app import app, registry


@app.command(short_help="Train the best model a time budget finds on a folder of photos, with no spec to write.",
             help=(
    "Train the best model the time budget can find on DATA, with no spec to write: a folder with train/ (and "
    "val/, test/) of class folders, one folder of class folders (a stratified, seeded validation split is made), a "
    "'PATH LABEL' .txt list or a CSV. tlzoo measures this machine, scores the candidate backbones with rank's "
    "linear probe, chooses the head's learning rate and epochs and whether fine-tuning the top groups pays, all "
    "on the validation split, then trains the chosen spec as an ordinary run (spec.json re-runs it) with "
    "decisions.json and a 'How this model was chosen' section in its report. The whole command keeps within "
    "--time (plus 10 %); a test split is read only by that final run."))
def train(
    data: Path = typer.Argument(..., help="a folder of images in class folders, or a .txt / .csv list"),
    time_budget: str = typer.Option("10m", "--time", help="the whole command's time: 10m, 90s, 1h30m"),
    backbones: List[str] = typer.Option([], "--backbones", "-b", help="candidate backbone patterns, e.g. "
                                        "'efficientnet_lite*' (default: those whose weights are on this machine)"),
    offline: bool = typer.Option(False, "--offline", help="skip candidates whose weights are not on this machine"),
    test: Optional[Path] = typer.Option(None, "--test", help="held-out test folder (or list), scored once at the "
                                                             "end (default: DATA/test when there is one)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="the run directory (default: "
                                                                       "runs/<DATA name>[-N])"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="seed of the validation split and of training"),
):
    from tlzoo.auto.budget import process_age
    from tlzoo.auto.train import train as train_auto
    from tlzoo.cli.run import best_line

    result = train_auto(data, time_budget, default_candidates(backbones), offline, test, output, seed, registry(),
                        already=process_age())
    typer.echo(best_line(result.summary) + f"; decisions: {Path(result.run_dir) / 'decisions.json'}")


def default_candidates(patterns: list[str]) -> list:
    """The backbones the patterns name (comma-separated or repeated), else those whose weights are here."""
    from tlzoo.cli.listing import matching_backbones
    from tlzoo.cli.rank import candidates_for
    from tlzoo.probe.ranking import Candidate

    wanted = [name.strip() for item in patterns for name in item.split(",") if name.strip()]
    if wanted:
        return candidates_for(wanted)
    return [Candidate(row["name"], row["weights"]) for row in matching_backbones(None, offline=True)]
