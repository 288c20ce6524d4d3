"""`tlzoo lr-find`: the learning-rate range test on a spec; cli/main.py imports this module to add it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from tlzoo.cli.app import app, registry
from tlzoo.errors import TlzooError


@app.command("lr-find", short_help="Find a learning rate by fastai's range test; plot it and suggest train.optimizer.lr.",
             help=(
    "Find a learning rate: fastai's range test on the spec's trainable part (the lr grows exponentially over "
    "--steps steps of the spec's own training step, through the activation cache when the backbone is frozen), "
    "a plot of loss against lr, and a suggestion by the steepest-descent rule (where the smoothed loss falls "
    "fastest against log lr; on flowers12 head-only it beat fastai's valley rule, see benchmarks/RESULTS.md) or "
    "the valley rule (the middle of the longest stretch over which the smoothed loss keeps falling). The model is "
    "put back afterwards and no run "
    "directory is made; --apply writes a copy of the spec with the suggested train.optimizer.lr."))
def lr_find(
    spec: Path = typer.Argument(..., help="run spec (JSON)"),
    set_: List[str] = typer.Option([], "--set", help="override a field: --set train.strategy=none"),
    steps: int = typer.Option(200, "--steps", min=5, max=10_000, help="optimizer steps of the test"),
    start_lr: float = typer.Option(1e-7, "--start-lr", min=0, help="first learning rate"),
    end_lr: float = typer.Option(10.0, "--end-lr", min=0, help="last learning rate"),
    epoch: int = typer.Option(1, "--epoch", min=1, help="test in the freeze phase of this epoch of the spec "
                                                        "(e.g. the first one after unfreezing)"),
    rule: str = typer.Option("steepest", "--rule", help="steepest or valley: which suggestion --apply uses"),
    plot: Path = typer.Option(Path("lr-find.png"), "--plot", help="PNG of loss against lr"),
    apply: bool = typer.Option(False, "--apply", help="write a copy of the spec with the suggested lr"),
    out: Optional[Path] = typer.Option(None, "--out", help="with --apply: the copy (default: SPEC-STEM.lr.json "
                                                           "in the current folder)"),
    as_json: bool = typer.Option(False, "--json", help="print the curve and the suggestions as JSON"),
):
    from tlzoo.probe.lr_range import RULE_TEXT, RULES, spec_range_test
    from tlzoo.runtime.device import configure_threads
    from tlzoo.spec import load_raw, load_spec

    if rule not in RULES:
        raise TlzooError(f"--rule {rule!r}: choose valley or steepest")
    if not 0 < start_lr < end_lr:
        raise TlzooError(f"--start-lr {start_lr:g} and --end-lr {end_lr:g}: need 0 < start < end",
                         "the defaults are 1e-7 and 10")
    resolved = load_spec(spec, registry(), set_)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    configure_threads(keep_buffers=False)
    test = spec_range_test(resolved, log, steps, start_lr, end_lr, epoch - 1)
    write_plot(test, plot, rule)
    suggested = test.suggestion(rule)
    if as_json:
        typer.echo(json.dumps({**test.to_json(), "rule": rule, "suggested_lr": suggested, "plot": str(plot)},
                              indent=2))
    else:
        other = "steepest" if rule == "valley" else "valley"
        alternative = test.suggestion(other)
        typer.echo(f"suggested lr: {suggested:.3g} ({RULE_TEXT[rule]})" if suggested is not None
                   else f"no suggestion by the {rule} rule: the loss never fell")
        typer.echo(f"{other} rule: {alternative:.3g}" if alternative is not None else f"{other} rule: none")
        typer.echo(f"{len(test.lrs)} steps, stopped after {test.stopped}; plot: {plot}")
    if apply:
        if suggested is None:
            raise TlzooError("--apply: the range test suggested no learning rate, so no spec was written",
                             "try more --steps, a wider --start-lr/--end-lr, or look at the plot")
        target = out or Path(f"{spec.stem}.lr.json")
        write_spec_copy(load_raw(spec, set_), resolved.base_dir, suggested, target)
        log(f"lr-find: wrote {target} with train.optimizer.lr {suggested:.3g}; tlzoo run {target}")


def write_plot(test, path: Path, rule: str) -> None:
    from tlzoo.probe.lr_plot import plot_range_test

    try:
        plot_range_test(test, path, rule)
    except OSError as exc:
        raise TlzooError(f"--plot {path}: {exc.strerror}", "pass a PNG path in a writable folder") from None


def write_spec_copy(raw: dict, base_dir: Path, lr: float, target: Path) -> None:
    """The spec with train.optimizer.lr set, base_dir kept so relative paths still point where they did."""
    from tlzoo.spec import resolve_spec

    train = raw.setdefault("train", {})
    optimizer = train.get("optimizer", {})
    optimizer = {"name": optimizer} if isinstance(optimizer, str) else dict(optimizer)
    optimizer["lr"] = float(f"{lr:.3g}")
    train["optimizer"] = optimizer
    raw["base_dir"] = str(base_dir)
    resolve_spec(raw, registry(), base_dir, str(target))  # what tlzoo run will check, before writing
    try:
        target.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise TlzooError(f"--out {target}: {exc.strerror}", "pass a path in a writable folder") from None
