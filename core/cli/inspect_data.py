"""`tlzoo inspect`: what may be wrong with a data set; cli/main.py imports this module to add it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from tlzoo.cli.app import app, registry
from tlzoo.errors import TlzooError
from tlzoo.rundir.outputs import SKIPPED_FILE

FORMATS = ("table", "csv", "json")
TABLE_ROWS = 20  # per kind; csv and json list every issue
VAL_FOLDERS = ("val", "valid", "validation")
OWN_SPLIT = 0.2  # of each class, when the folder has no validation split: merged back, see data_spec


@app.command(short_help="Find likely mislabelled images, near-duplicates and leaks, outliers and class imbalance.",
             help=(
    "Find what may be wrong with a data set: likely mislabelled images (out-of-fold linear probe on pooled "
    "features, per-class thresholds), near-duplicates within a split and leaks across splits (feature "
    "similarity plus a perceptual hash), outliers (k-nearest-neighbour distance) and class balance. Reads a "
    "spec (any reader) or a data folder; writes issues.csv, findings.json and inspect.html into --out; never "
    "moves or deletes a file."))
def inspect(
    target: Path = typer.Argument(..., help="a run spec (JSON), or a data folder: train/ (val/, test/) of class "
                                            "folders, or one folder of class folders"),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b",
                                           help="backbone whose pretrained features are compared (default: the "
                                                "spec's; efficientnet_lite0 for a folder)"),
    fmt: str = typer.Option("table", "--format", help="table, csv or json (what is printed)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="folder for issues.csv, findings.json and inspect.html "
                                            "(default: ./inspect-NAME)"),
    set_: List[str] = typer.Option([], "--set", help="override a field of the spec: --set data.batch_size=64"),
):
    from tlzoo.cache import run_cache_scope
    from tlzoo.data.labelled import load_labelled
    from tlzoo.engine.data_findings import data_findings, summary_line, write_findings
    from tlzoo.findings.issues import findings_json, issues_csv
    from tlzoo.probe.ranking import with_backbone
    from tlzoo.report.findings_section import write_findings_page
    from tlzoo.runtime.device import configure_threads
    from tlzoo.spec import apply_overrides, load_raw, resolve_spec

    if fmt not in FORMATS:
        raise TlzooError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if target.is_dir():
        raw, names = data_spec(target)
        base_dir, source, name = Path.cwd(), str(target), target.resolve().name
    elif target.is_file():
        raw, names = load_raw(target), {}
        base_dir, source, name = target.resolve().parent, str(target), target.stem
    else:
        raise TlzooError(f"{target} does not exist", "pass a run spec (JSON) or a folder of images")
    if backbone is not None and isinstance(raw, dict):
        raw = with_backbone(raw, backbone)
    if isinstance(raw, dict):  # after --backbone, so that --set backbone.weights=... applies to it
        raw = apply_overrides(raw, list(set_), source)
    resolved = resolve_spec(raw, registry(), base_dir, source, list(set_))
    out = out if out is not None else Path(f"inspect-{name}")
    if out.exists() and not out.is_dir():
        raise TlzooError(f"--out {out} is a file", "pass a folder (it is created when missing)")
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    configure_threads(keep_buffers=False)
    with run_cache_scope():
        data = load_labelled(resolved)
        for note in data.notes:
            log(f"data: {note}")
        findings = data_findings(resolved, data, log, names)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TlzooError(f"cannot create --out {out}: {exc.strerror}", "pick a writable folder") from None
    write_findings(out, findings)
    unread = unreadable_files(data.skipped, out / SKIPPED_FILE)
    weights = resolved.spec.backbone.weights
    page = write_findings_page(findings, out / "inspect.html", name,
                               f"From {resolved.backbone.name}'s pooled features (weights: "
                               f"{weights if isinstance(weights, str) else weights.path}) and perceptual hashes"
                               + (f"; {unread}" if unread else "") + ":")
    if fmt == "csv":
        typer.echo(issues_csv(findings), nl=False)
    elif fmt == "json":
        typer.echo(findings_json(findings), nl=False)
    else:
        typer.echo(table(findings, data.skipped), nl=False)
    log(f"inspect: {summary_line(findings)}" + (f"; {unread}" if unread else ""))
    written = [out / "issues.csv", out / "findings.json"] + ([out / SKIPPED_FILE] if unread else [])
    log(f"inspect: wrote {', '.join(map(str, written))} and {page} (nothing was moved or deleted)")


def unreadable_files(skipped, path: Path) -> str:
    """skipped.txt in --out for the files the scan could not use (a damaged image, not an image), as `tlzoo run`
    lists them; a stale one from an earlier inspect goes. Returns the words for the summary, '' when none."""
    from tlzoo.data.skipped import write_skipped

    if not write_skipped(skipped, path, when="by the scan"):
        path.unlink(missing_ok=True)
        return ""
    return f"{len(skipped)} file(s) could not be read and were left out, listed in {path}"


def data_spec(folder: Path) -> tuple[dict, dict[str, str]]:
    """(a spec reading `folder` with imagefolder, the names its splits are shown under).

    train/ with val/ (or valid/, validation/) and test/ are read as they are; a test/ without a val/ is
    shown as test; one folder of class folders is one split, 'all' (read as train and a stratified
    validation share, then merged back into one for the findings).
    """
    folders = {entry.name.lower(): entry.name for entry in folder.iterdir() if entry.is_dir()}
    options: dict = {"root": str(folder.resolve())}
    names: dict[str, str] = {}
    if "train" in folders:
        options["train"] = folders["train"]
        val = next((folders[name] for name in VAL_FOLDERS if name in folders), None)
        if val is not None:
            options["val"] = val
            if "test" in folders:
                options["test"] = folders["test"]
        elif "test" in folders:
            options["val"], names = folders["test"], {"val": "test"}
        else:
            options["val_split"], names = OWN_SPLIT, {"val": "train"}
    else:
        options.update({"train": ".", "val_split": OWN_SPLIT})
        names = {"train": "all", "val": "all"}
    return {"name": folder.resolve().name or "data", "data": {"reader": {"name": "imagefolder",
                                                                          "options": options}}}, names


def table(findings, skipped=()) -> str:
    from tlzoo.data.escaping import line_safe

    lines = []
    sections = [
        ("likely mislabelled", "mislabelled", lambda i: [f"{i.score:.3f}", i.split, f"{i.label} -> {i.suggested}",
                                                         i.path]),
        ("leaks across splits", "leak", lambda i: [f"{i.score:.3f}", f"{i.split}:{i.label}",
                                                   f"{i.other_split}:{i.other_label}", f"{i.path}  {i.other_path}"]),
        ("duplicates within a split", "duplicate", lambda i: [f"{i.score:.3f}", f"{i.split}:{i.label}",
                                                              f"{i.other_split}:{i.other_label}",
                                                              f"{i.path}  {i.other_path}"]),
        ("outliers (robust z)", "outlier", lambda i: [f"{i.score:.2f}", i.split, i.label, i.path]),
        ("small classes", "small_class", lambda i: [f"{i.score:.1f}", i.split, i.label, i.detail]),
    ]
    for title, kind, cells in sections:
        issues = findings.of_kind(kind)
        lines.append(f"{title}: {len(issues)}")
        rows = [cells(issue) for issue in issues[:TABLE_ROWS]]
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))] if rows else []
        lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        if len(issues) > TABLE_ROWS:
            lines.append(f"  ... {len(issues) - TABLE_ROWS} more in issues.csv")
    balance = findings.balance
    ratio = "-" if balance.ratio is None else f"{balance.ratio:.1f}x"
    first = list(balance.counts)[0]
    smallest = ", ".join(f"{name} ({balance.counts[first][balance.classes.index(name)]})" for name in balance.smallest)
    lines.append(f"balance: {len(balance.classes)} classes, largest/smallest training class {ratio}; smallest: "
                 f"{smallest}")
    if skipped:
        lines.append(f"unreadable, left out: {len(skipped)}")
        lines += [f"  {line_safe(problem.origin)}  {line_safe(problem.reason)}" for problem in skipped[:TABLE_ROWS]]
        if len(skipped) > TABLE_ROWS:
            lines.append(f"  ... {len(skipped) - TABLE_ROWS} more in {SKIPPED_FILE}")
    lines += [f"note: {note}" for note in findings.notes]
    return "\n".join(lines) + "\n"

