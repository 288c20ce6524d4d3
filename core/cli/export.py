"""`tlzoo export`; cli/main.py imports this module to add it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tlzoo.cli.app import app, registry


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a run directory written by `tlzoo run`"),
    fmt: str = typer.Option("onnx", "--format", help="onnx (onnxruntime and friends) or pt2 (torch.export)"),
    which: str = typer.Option("best", "--model", help="best or last"),
    opset: int = typer.Option(18, "--opset", help="ONNX operator set"),
    out: Optional[Path] = typer.Option(None, "--out", help="file to write (default: RUN_DIR/<model>.<format>)"),
    with_preprocessing: bool = typer.Option(False, "--with-preprocessing",
                                            help="the graph takes uint8 images at the input size and normalizes "
                                                 "inside"),
    layout: str = typer.Option("nhwc", "--layout", help="with --with-preprocessing: nhwc (N,H,W,3) or nchw"),
    quantize: Optional[str] = typer.Option(None, "--quantize",
                                           help="dynamic: also write an int8 ONNX file, kept when top-1 "
                                                "agreement is at least 0.99"),
    min_agreement: float = typer.Option(0.995, "--min-agreement",
                                        help="fail when top-1 agreement with the eager model is below this"),
    parity_images: int = typer.Option(512, "--parity-images",
                                      help="validation images checked at most (evenly spaced); 0 means all"),
    parity_data: Optional[Path] = typer.Option(None, "--parity-data",
                                               help="check parity on these images instead of the run's validation "
                                                    "split"),
    exporter: str = typer.Option("auto", "--exporter",
                                 help="ONNX: auto (dynamo, else TorchScript), dynamo or torchscript"),
):
    """Export a run's model to ONNX or torch.export, with its classes, preprocessing and a parity check."""
    from tlzoo.export.exporting import export_run

    result = export_run(run_dir, fmt, which, out, opset, with_preprocessing, layout, quantize, min_agreement,
                        parity_images, parity_data, exporter, registry())
    report = result.parity
    typer.echo(f"{result.path}: {report.images} images, top-1 agreement {report.top1_agreement:.4f}, "
               f"max |logit diff| {report.max_abs_logit_diff:.2e} ({result.exporter}); report: {result.report_path}")
    if result.quantized is not None:
        q = result.quantized
        agreement = q.get("parity", {}).get("top1_agreement")
        status = f"top-1 agreement {agreement:.4f}" if agreement is not None else q.get("error", "")
        typer.echo(f"int8: {q['path'] if q['kept'] else 'not kept'} ({status})")
