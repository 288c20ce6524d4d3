"""`tlzoo rank`: a backbone leaderboard on one spec's data; cli/main.py imports this module to add it."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from tlzoo.cli.app import app, registry
from tlzoo.errors import TlzooError

FORMATS = ("table", "json", "csv")
COLUMNS = ["backbone", "parameters", "input_size", "features_per_s", "probe_top1", "knn_top1", "logme", "seconds"]


@app.command(short_help="Rank pretrained backbones on a spec's data without training (linear probe, kNN, LogME).",
             help=(
    "Rank backbones for a spec's data: one pass of frozen, pooled features per backbone (kept in the activation "
    "cache, so a second rank is near-instant), then a linear probe (logistic regression, L2 chosen by "
    "cross-validation on the training split), a kNN (cosine) and LogME, sorted by probe top-1 on the validation "
    "split. The probe is a heuristic for the accuracy after fine-tuning, not a measurement of it: published rank "
    "correlations of such scores with fine-tuned accuracy are 0.5-0.8."))
def rank(
    spec: Path = typer.Argument(..., help="run spec (JSON): its data, head, precision and cache are used"),
    patterns: Optional[List[str]] = typer.Argument(None, help="more backbone patterns (also accepted after "
                                                              "one --backbones)"),
    backbones: List[str] = typer.Option([], "--backbones", "-b",
                                        help="shell-style backbone patterns, e.g. 'efficientnet_lite*' 'timm/resnet*'"),
    offline: bool = typer.Option(False, "--offline", help="skip backbones whose weights are not on this machine"),
    budget: Optional[float] = typer.Option(None, "--budget",
                                           help="minutes (more than 0): start no further backbone after this long"),
    fmt: str = typer.Option("table", "--format", help="table, json or csv"),
    write_spec: Optional[Path] = typer.Option(None, "--write-spec",
                                              help="write the spec with the winning backbone here"),
    knn_k: int = typer.Option(10, "--knn-k", min=1, help="neighbours of the kNN score"),
    set_: List[str] = typer.Option([], "--set", help="override a field of the spec: --set data.batch_size=64"),
):
    from tlzoo.cache import run_cache_scope
    from tlzoo.data.labelled import load_labelled
    from tlzoo.probe.ranking import rank_backbones, write_winner_spec
    from tlzoo.runtime.device import configure_threads
    from tlzoo.spec import load_raw, load_spec

    if fmt not in FORMATS:
        raise TlzooError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if budget is not None and not budget > 0:  # 0 would rank nothing and still exit 0
        raise TlzooError(f"--budget {budget:g}: give minutes greater than 0",
                         "leave --budget out to rank every matching backbone")
    wanted = list(backbones) + list(patterns or [])
    if not wanted:
        raise TlzooError("tlzoo rank needs backbone patterns",
                         "tlzoo rank SPEC.json --backbones 'efficientnet_lite*' 'timm/resnet*'")
    if write_spec is not None and write_spec.is_dir():
        raise TlzooError(f"--write-spec {write_spec} is a folder", "pass the JSON file to write, e.g. best.json")
    resolved = load_spec(spec, registry(), set_)
    raw = load_raw(spec, set_)
    candidates = candidates_for(wanted)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    configure_threads(keep_buffers=False)
    with run_cache_scope():
        data = load_labelled(resolved)
        ranking = rank_backbones(raw, resolved.base_dir, str(spec), registry(), candidates, data, log,
                                 offline=offline, budget_minutes=budget, knn_k=knn_k)
    typer.echo(render(ranking, fmt), nl=False)
    if write_spec is not None:
        if not ranking.rows:
            raise TlzooError(f"no backbone could be ranked, so --write-spec {write_spec} was not written",
                             "see the skipped backbones and their reasons above")
        write_winner_spec(raw, ranking.rows[0]["backbone"], resolved.base_dir, registry(), write_spec)
        log(f"rank: wrote {write_spec} with backbone {ranking.rows[0]['backbone']}; tlzoo run {write_spec}")


def candidates_for(patterns: list[str]) -> list:
    """Every backbone matching a pattern, once, in the order the patterns and the listing give."""
    from tlzoo.cli.listing import matching_backbones
    from tlzoo.probe.ranking import Candidate

    seen: dict[str, object] = {}
    for pattern in patterns:
        rows = matching_backbones(pattern)
        if not rows:
            raise TlzooError(f"no backbone matches pattern {pattern!r}",
                             "patterns are shell-style and match the whole name ('timm/resnet*'); "
                             "tlzoo list backbones shows the names")
        for row in rows:
            seen.setdefault(row["name"], Candidate(row["name"], row["weights"]))
    return list(seen.values())


def render(ranking, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(ranking.to_json(), indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS + ["cached", "skipped"])
        for row in ranking.rows:
            writer.writerow([row[c] if row[c] is not None else "" for c in COLUMNS] + [row["cached"], ""])
        for row in ranking.skipped:
            writer.writerow([row["backbone"]] + [""] * (len(COLUMNS) - 1) + ["", row["reason"]])
        return out.getvalue()
    return table(ranking)


def table(ranking) -> str:
    from tlzoo.probe.ranking import HONESTY_NOTE

    headers = ["backbone", "params", "input", "features/s", "probe top-1", f"kNN top-1 (k={ranking.knn_k})",
               "LogME", "seconds"]
    rows = [[row["backbone"], f"{row['parameters'] / 1e6:.1f}M", row["input_size"],
             "cached" if row["features_per_s"] is None else f"{row['features_per_s']:.0f}",
             f"{row['probe_top1']:.4f}", f"{row['knn_top1']:.4f}", f"{row['logme']:.4f}", f"{row['seconds']:.1f}"]
            for row in ranking.rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [headers, *rows]]
    lines += [f"skipped {row['backbone']}: {row['reason']}" for row in ranking.skipped]
    lines.append(f"note: {HONESTY_NOTE}")
    return "\n".join(lines) + "\n"
