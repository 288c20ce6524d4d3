"""`tlzoo run`, `tlzoo evaluate` and `tlzoo predict`; cli/main.py imports this module to add them."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from tlzoo.cli.app import app, registry
from tlzoo.errors import TlzooError


@app.command()
def run(
    spec: Optional[Path] = typer.Argument(None, help="run spec (JSON); with --resume, default: the run's own"),
    set_: List[str] = typer.Option([], "--set", help="override a field: --set train.epochs=5"),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="run directory (default: <spec output>/<spec name>[-N])"),
    resume: Optional[Path] = typer.Option(None, "--resume",
                                          help="continue the run in this directory from its last checkpoint"),
    allow_changes: List[str] = typer.Option([], "--allow-changes",
                                            help="with --resume: spec fields that may differ from the run's, "
                                                 "e.g. --allow-changes epochs (comma-separated or repeated)"),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1,
                                        help="train with N processes on this machine (DistributedDataParallel, "
                                             "one GPU each on CUDA), started by torch's elastic launcher"),
):
    """Train a classifier as the spec says; writes a run directory."""
    from tlzoo.engine.run import run_spec
    from tlzoo.rundir.resume import load_resumed_spec
    from tlzoo.spec import load_spec

    if resume is not None and output is not None:
        raise TlzooError("--resume and --output both name a run directory", "pass only --resume RUN_DIR")
    if spec is None and resume is None:
        raise TlzooError("tlzoo run needs a spec file", "tlzoo run SPEC.json, or tlzoo run --resume RUN_DIR")
    if allow_changes and resume is None:
        raise TlzooError("--allow-changes applies to --resume only", "drop it, or add --resume RUN_DIR")
    allowed = [name.strip() for item in allow_changes for name in item.split(",") if name.strip()]
    resolved = load_spec(spec, registry(), set_) if spec is not None else load_resumed_spec(resume, registry(), set_)
    if nproc is not None and nproc > 1:  # the spec was checked above, once, before any worker starts
        from tlzoo.cli.launch import check_job, job_run_dir, launch_local, run_arguments

        check_job(resolved, nproc)
        run_dir, created, finished = job_run_dir(resolved, output, resume, allowed)
        if finished is not None:  # a resume with nothing left to train said so; no worker is needed
            typer.echo(best_line(finished.summary))
            return
        launch_local(nproc, run_arguments(spec, set_, run_dir if resume is None else None, resume, allow_changes),
                     run_dir, created)
        return
    result = run_spec(resolved, output, resume=resume, allow_changes=allowed)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the job
        typer.echo(best_line(result.summary))


def best_line(summary: dict) -> str:
    best = summary.get("best") or {}
    if summary.get("best_epoch") is None:
        return f"no epoch gave a finite {summary['monitor']}; run directory: {summary['run_dir']}"
    top5 = f", val top-5 {best['val_top5']:.4f}" if best.get("val_top5") is not None else ""
    test = summary.get("test")
    held_out = f"; test top-1 {test['top1']:.4f} ({test['count']} held-out images)" if test else ""
    kept = "kept the last epoch," if summary.get("keep") == "last" else "best epoch"
    refit = summary.get("refit")  # train.refit: the model kept (and tested) is not the one validated above
    refitted = (f"; then trained again, epochs 1-{refit['epoch']} on {refit['train_images']} train + val images "
                "(train.refit)" if refit else "")
    return (f"{kept} {summary['best_epoch']}/{summary['epochs_run']}: val top-1 {best['val_top1']:.4f}"
            f"{top5}, val loss {best['val_loss']:.4f}{refitted}{held_out}; run directory: {summary['run_dir']}")


def check_tta(tta: str) -> None:
    from tlzoo.engine.tta import TTA_CHOICES

    if tta not in TTA_CHOICES:
        raise TlzooError(f"--tta {tta!r}: choose one of {', '.join(TTA_CHOICES)}")


def check_model_option(which: Optional[str], target: Path) -> str:
    """--model names best or last of a run directory; an exported file is one model, so it takes none."""
    from tlzoo.export.predicting import is_exported_file

    if which is not None and is_exported_file(target):
        raise TlzooError(f"--model {which} applies to run directories; {target} is an exported file, one model",
                         "drop --model, or export the other model: tlzoo export RUN_DIR --model last")
    if which not in (None, "best", "last"):
        raise TlzooError(f"--model {which!r}: choose 'best' or 'last'")
    return which or "best"


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="a run directory written by `tlzoo run`, "
                                             "or a .onnx/.pt2 file from `tlzoo export`"),
    data: Optional[Path] = typer.Option(None, "--data", help="a folder of class sub-folders (default: the run's "
                                                             "validation split)"),
    which: Optional[str] = typer.Option(None, "--model", help="best or last (default best; run directories only)"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
    per_image: Optional[Path] = typer.Option(None, "--per-image", help="write one CSV row per image: path, true, "
                                                                       "predicted, probability, loss"),
    tta: str = typer.Option("none", "--tta", help="test-time augmentation: none, flip (2 views) or flip_crops "
                                                  "(flips and 4 corner crops: 6 views); probabilities averaged"),
):
    """Evaluate a run's model (or an exported file) on its validation split or on another folder."""
    from tlzoo.engine.evaluation import evaluate_run
    from tlzoo.engine.inference import load_run
    from tlzoo.export.predicting import is_exported_file
    from tlzoo.runtime.interrupts import StopRequest

    which = check_model_option(which, run_dir)
    check_tta(tta)
    with StopRequest(what="during evaluation"):  # SIGTERM and Ctrl-C stop at once, exit 143 / 130
        if is_exported_file(run_dir):  # FILE.onnx / FILE.pt2: --data, or the validation split of its run directory
            from tlzoo.export.evaluating import evaluate_exported

            if tta != "none":
                raise TlzooError("--tta works with a run directory, not an exported file",
                                 "pass the run directory the file was exported from")
            result, report = evaluate_exported(run_dir, registry(), data)
        else:
            loaded = load_run(run_dir, registry(), which)
            loaded.tta = tta
            if data is None and loaded.sidecar.get("refit"):  # train.refit: those images trained this model
                print("tlzoo: note: this model was trained again on its validation images too (train.refit): "
                      "its figures on them are not held-out ones; pass --data FOLDER of other images",
                      file=sys.stderr)
            result, report = evaluate_run(loaded, registry(), data)
    if per_image is not None:
        from tlzoo.engine.reporting import write_per_image_csv

        write_per_image_csv(per_image, result.extra["records"])
        print(f"tlzoo: {len(result.extra['records'])} per-image rows written to {per_image}", file=sys.stderr)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    top5 = f"  top-5 {result.top5:.4f}" if result.top5 is not None else ""
    typer.echo(f"{result.count} images  top-1 {result.top1:.4f}{top5}  loss {result.loss:.4f}")
    if "calibration" in report:
        typer.echo(calibration_line(report))
    for name, accuracy in report["per_class_accuracy"].items():
        typer.echo(f"  {name}: {'-' if accuracy is None else f'{accuracy:.4f}'}")


def calibration_line(report: dict) -> str:
    """evaluate's trust figures in one line: ECE/NLL/Brier before and after the temperature, the share kept."""
    from tlzoo.trust.calibration import change_text

    cal = report["calibration"]
    line = f"calibrated (temperature {cal['temperature']:.3f}): {change_text(cal['before'], cal['after'])}"
    unknown = report.get("unknown")
    if unknown:
        line += (f"\nunknown ({unknown['method']}, threshold {unknown['threshold']:.4g}): {unknown['kept']:.1%} of these "
                 f"{unknown['images']} images kept (validation: {unknown['val_kept']:.1%})")
    return line


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="a run directory written by `tlzoo run`, "
                                             "or a .onnx/.pt2 file from `tlzoo export`"),
    inputs: List[Path] = typer.Argument(..., help="image files or folders"),
    top_k: int = typer.Option(5, "--top-k", min=1, help="classes to show per image"),
    fmt: str = typer.Option("table", "--format", help="table, csv or json"),
    which: Optional[str] = typer.Option(None, "--model", help="best or last (default best; run directories only)"),
    tta: str = typer.Option("none", "--tta", help="test-time augmentation: none, flip (2 views) or flip_crops "
                                                  "(flips and 4 corner crops: 6 views); probabilities averaged"),
    no_reject: bool = typer.Option(False, "--no-reject", help="never mark an image unknown (scores still shown)"),
    keep: Optional[float] = typer.Option(None, "--keep", help="share of known images to keep, e.g. 0.99: the "
                                                              "unknown threshold for it, chosen on the run's "
                                                              "validation scores (default: the run's own, 0.95)"),
):
    """Predict the classes of images with a run's model.

    An image whose out-of-distribution score is above the run's threshold is marked
    unknown (its best classes still shown). An input that is missing or not an image
    is reported and the others are still predicted; the exit status is then 1 (2 when
    none could be predicted).
    """
    from tlzoo.data.escaping import line_safe
    from tlzoo.data.images import IMAGE_EXTENSIONS
    from tlzoo.engine.inference import collect_images, load_run, predict as predict_images
    from tlzoo.runtime.interrupts import StopRequest
    from tlzoo.export.predicting import is_exported_file, load_exported, predict_exported

    if fmt not in ("table", "csv", "json"):
        raise TlzooError(f"--format {fmt!r}: choose table, csv or json")
    check_tta(tta)
    which = check_model_option(which, run_dir)
    with StopRequest(what="during prediction"):  # SIGTERM and Ctrl-C stop at once, exit 143 / 130
        paths = collect_images(list(inputs))
        if not paths:
            raise TlzooError("no image files found in " + ", ".join(map(str, inputs)),
                             "tlzoo looks for these suffixes in folders: " + " ".join(IMAGE_EXTENSIONS))
        if is_exported_file(run_dir):  # FILE.onnx / FILE.pt2 from `tlzoo export`: its metadata says how to feed it
            if tta != "none":
                raise TlzooError("--tta works with a run directory, not an exported file",
                                 "pass the run directory the file was exported from")
            results = predict_exported(load_exported(run_dir), paths, top_k, reject=not no_reject, keep=keep)
        else:
            loaded = load_run(run_dir, registry(), which)
            loaded.tta = tta
            results = predict_images(loaded, paths, top_k, reject=not no_reject, keep=keep)
    typer.echo(render(results, fmt), nl=False)
    failed = [r for r in results if r.error]
    for item in failed:
        print(f"tlzoo: skipped {line_safe(item.path)}: {line_safe(item.error)}", file=sys.stderr)
    if failed and len(failed) == len(results):
        raise TlzooError(f"none of the {len(results)} input(s) could be predicted (each is listed above)",
                         "pass image files, or folders holding images")
    if failed:
        partial = TlzooError(f"{len(failed)} of {len(results)} input(s) could not be read and have no "
                             f"prediction (each is listed above); the other {len(results) - len(failed)} "
                             "were predicted")
        partial.exit_code = 1  # the output is usable; 2 means nothing was done
        raise partial


def render(results, fmt: str) -> str:
    """JSON and CSV quote what they hold; the table escapes names (tlzoo.data.escaping), one image a line."""
    from tlzoo.data.escaping import line_safe

    if fmt == "json":
        return json.dumps([{"path": str(r.path), "error": r.error, "unknown": r.unknown, "ood_score": r.ood_score,
                            "top": [{"class": c, "probability": p} for c, p in r.top]} for r in results],
                          indent=2) + "\n"
    if fmt == "csv":  # unknown and ood_score repeat on each of an image's rows, so each row stands alone
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "rank", "class", "probability", "error", "unknown", "ood_score"])
        for r in results:
            if r.error:
                writer.writerow([r.path, "", "", "", r.error, "", ""])
            score = "" if r.ood_score is None else f"{r.ood_score:.6g}"
            for rank, (name, prob) in enumerate(r.top, 1):
                writer.writerow([r.path, rank, name, f"{prob:.6f}", "", str(r.unknown).lower(), score])
        return buffer.getvalue()
    lines = []
    width = max(len(line_safe(r.path)) for r in results)
    for r in results:
        text = f"ERROR {line_safe(r.error)}" if r.error else "  ".join(f"{line_safe(c)} {p:.3f}" for c, p in r.top)
        if not r.error and r.unknown:
            text = f"UNKNOWN  {text}"
        if not r.error and r.ood_score is not None:
            text += f"  ood {r.ood_score:.4g}"
        lines.append(f"{line_safe(r.path).ljust(width)}  {text}")
    return "\n".join(lines) + "\n"
