"""`tlzoo export`: a run's model to ONNX or torch.export, with its metadata and a parity proof.

Steps: rebuild the run's model (tlzoo.engine.inference.load_run), optionally
wrap it with the preprocessing, write the file, seal the metadata into or
beside it, run the written file against the eager fp32 model on the run's
validation images, and store the report beside the file. Agreement below
`min_agreement` removes the file and fails: a file that disagrees with
PyTorch is worse than none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tlzoo.engine.inference import collect_images, load_run, note
from tlzoo.errors import TlzooError
from tlzoo.export import metadata, metadata_fields, onnx_file, parity, pt2_file
from tlzoo.export.preprocess import WithPreprocessing
from tlzoo.export.trusted import SCORE_OUTPUT, WithScore
from tlzoo.rundir import outputs
from tlzoo.runtime.device import configure_threads
from tlzoo.version import __version__

FORMATS = ("onnx", "pt2")


@dataclass
class ExportResult:
    path: Path
    format: str
    exporter: str
    metadata: dict
    parity: parity.ParityReport
    report_path: Path
    quantized: dict | None = None  # {"path", "kept", "parity"} with --quantize dynamic
    notes: list[str] = field(default_factory=list)


def report_path_of(path: Path) -> Path:
    return path.with_name(path.name + ".parity.json")


def validation_paths(run_dir: Path, sidecar: dict, registry) -> list[Path]:
    """The run's validation split, read again through its reader (as `tlzoo evaluate` does)."""
    from tlzoo.data.labelled import load_labelled
    from tlzoo.spec import resolve_spec

    raw = outputs.read_json(run_dir / outputs.SPEC_FILE, "resolved spec")
    try:
        resolved = resolve_spec(raw, registry, Path(sidecar["spec_dir"]), str(run_dir / outputs.SPEC_FILE))
        items = load_labelled(resolved).val
    except TlzooError as exc:
        raise TlzooError(f"cannot read the run's validation images for the parity check: {exc.message}",
                         "pass --parity-data FOLDER with images like the ones the model will see") from None
    return [path for path, _ in items]


def parity_sample(run_dir: Path, sidecar: dict, registry, parity_data: Path | None, limit: int):
    found = collect_images([parity_data]) if parity_data is not None else validation_paths(run_dir, sidecar, registry)
    where = f"images in {parity_data}" if parity_data is not None else "validation images of the run"
    if not found:
        raise TlzooError(f"no {where} for the parity check", "pass --parity-data FOLDER with images")
    chosen = parity.spread(found, limit)
    sample = f"all {len(found)} {where}" if len(chosen) == len(found) else \
        f"{len(chosen)} of {len(found)} {where}, evenly spaced"
    return chosen, sample


def base_metadata(loaded, which: str, with_preprocessing: bool, layout: str, exporter: str, opset) -> dict:
    side = loaded.sidecar
    return {
        "format": metadata.FORMAT,
        "classes": loaded.classes,
        "input": metadata.input_of(loaded.data_config, with_preprocessing, layout),
        "preprocessing": metadata.preprocessing_of(loaded.data_config, loaded.background, with_preprocessing),
        "backbone": side["backbone"],
        "source": {"run_dir": str(loaded.run_dir.resolve()), "model": which},
        "spec_hash": side.get("spec_hash"),
        "tlzoo_version": __version__,
        "torch_version": torch.__version__,
        "exporter": exporter,
        "opset": opset,
        "quantized": None,
        **({"trust": loaded.trust.record} if loaded.trust is not None else {}),
    }


def export_run(run_dir: Path | str, format: str = "onnx", model: str = "best", out: Path | str | None = None,
               opset: int = onnx_file.DEFAULT_OPSET, with_preprocessing: bool = False, layout: str = "nhwc",
               quantize: str | None = None, min_agreement: float = parity.DEFAULT_MIN_AGREEMENT,
               parity_images: int = parity.DEFAULT_SAMPLE, parity_data: Path | str | None = None,
               exporter: str = "auto", registry=None, log: Callable[[str], None] = note) -> ExportResult:
    """Export a run's model; see the module docstring. Raises TlzooError on every user-fixable problem."""
    from tlzoo.registry import get_registry

    run_dir = Path(run_dir)
    if format not in FORMATS:
        raise TlzooError(f"--format {format!r}: choose onnx or pt2")
    if model not in ("best", "last"):
        raise TlzooError(f"--model {model!r}: choose 'best' or 'last'")
    if layout not in ("nhwc", "nchw"):
        raise TlzooError(f"--layout {layout!r}: choose nhwc or nchw")
    if quantize not in (None, "dynamic"):
        raise TlzooError(f"--quantize {quantize!r}: the one choice is 'dynamic'")
    if quantize and format != "onnx":
        raise TlzooError("--quantize dynamic works on ONNX files", "add --format onnx")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise TlzooError(f"--exporter {exporter!r}: choose auto, dynamo or torchscript")
    if not 0.0 <= min_agreement <= 1.0:
        raise TlzooError(f"--min-agreement {min_agreement}: give a fraction between 0 and 1")
    if format == "onnx":
        onnx_file.require_onnx()
    registry = registry or get_registry()
    configure_threads()
    loaded = load_run(run_dir, registry, model, device="cpu")
    net = loaded.model.float().to(memory_format=torch.contiguous_format).eval()
    scorer = loaded.trust.scorer if loaded.trust is not None else None
    if loaded.trust is None:
        log(f"{run_dir}: its {model} model has no calibration or unknown threshold; the file predicts without them")
    scored = WithScore(net, scorer.cpu()).eval() if scorer is not None else net
    threshold = loaded.trust.threshold() if scorer is not None else None
    paths, sample = parity_sample(run_dir, loaded.sidecar, registry,
                                  Path(parity_data) if parity_data is not None else None, parity_images)
    inputs = parity.prepare(paths, loaded.data_config, loaded.background, with_preprocessing, layout, sample)
    module = WithPreprocessing(scored, loaded.data_config.mean, loaded.data_config.std, layout).eval() \
        if with_preprocessing else scored
    names = (onnx_file.OUTPUT_NAME, SCORE_OUTPUT) if scorer is not None else (onnx_file.OUTPUT_NAME,)
    # two images: a batch of one would let the exporter fix the batch size at 1
    example = torch.from_numpy(np.stack((inputs.exported * 2)[:2]))
    path = Path(out) if out is not None else run_dir / f"{model}.{format}"
    path.parent.mkdir(parents=True, exist_ok=True)

    if format == "onnx":
        used = onnx_file.write_graph(module, example, path, opset, exporter, log, names)
        meta = onnx_file.embed(path, base_metadata(loaded, model, with_preprocessing, layout, used, opset))
        run_exported = onnx_file.runner(path, torch.get_num_threads())
    else:
        used = "torch.export"
        meta = pt2_file.write(module, example, path, base_metadata(loaded, model, with_preprocessing, layout,
                                                                     used, None))
        run_exported = pt2_file.runner(path, meta)
    _refuse_out_of_range(meta, path)
    reference = parity.eager_outputs(scored, inputs)
    report = parity.compare(reference, parity.exported_outputs(run_exported, inputs), sample, min_agreement,
                            threshold)
    log(f"{path.name} ({used}): {report.line()}")
    result = ExportResult(path, format, used, meta, report, report_path_of(path))
    if report.passed and quantize:
        result.quantized = _quantized(path, meta, reference, inputs, log, threshold)
    _write_report(result)
    if not report.passed:
        path.unlink(missing_ok=True)
        if format == "pt2":
            pt2_file.sidecar_of(path).unlink(missing_ok=True)
        raise TlzooError(f"the exported model disagrees with the eager model: {report.line()}; {path} was removed "
                         f"(report in {result.report_path})",
                         "try --format pt2 or the other --exporter, or lower --min-agreement if this is expected")
    return result


def _refuse_out_of_range(meta: dict, path: Path) -> None:
    """A run whose data config no consumer could be fed by (checked as `tlzoo predict` will) leaves no file."""
    bad = metadata_fields.problems(meta)
    if bad:
        path.unlink(missing_ok=True)
        pt2_file.sidecar_of(path).unlink(missing_ok=True)
        raise TlzooError(f"the run's preprocessing is out of the range an exported file may carry: {'; '.join(bad)}",
                         "check the backbone's data config (its mean, std, crop_pct and input size)")


def _quantized(path: Path, meta: dict, reference: list[np.ndarray], inputs: parity.ParityInputs, log,
               threshold: float | None) -> dict:
    """int8 weights beside the fp32 file, kept only when it agrees well enough; reported either way."""
    target = path.with_name(path.stem + ".int8.onnx")
    try:
        onnx_file.quantize_dynamic(path, target)
    except Exception as exc:  # onnxruntime's quantizer raises whatever its passes raise
        target.unlink(missing_ok=True)
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        log(f"int8 quantization failed ({reason}); only the fp32 file is written")
        return {"path": None, "kept": False, "error": reason}
    body = {k: v for k, v in meta.items() if k != "checksums"}
    onnx_file.embed(target, {**body, "quantized": "dynamic-int8"})
    report = parity.compare(reference, parity.exported_outputs(onnx_file.runner(target, torch.get_num_threads()),
                                                               inputs),
                            inputs.sample, parity.QUANTIZED_MIN_AGREEMENT, threshold)
    kept = report.passed
    if not kept:
        target.unlink(missing_ok=True)
    log(f"{target.name} (dynamic int8): {report.line()}; " + ("kept" if kept else "removed, the fp32 file stands"))
    return {"path": str(target) if kept else None, "kept": kept, "parity": report.to_dict()}


def _write_report(result: ExportResult) -> None:
    outputs.write_json(result.report_path, {
        "file": str(result.path), "format": result.format, "exporter": result.exporter,
        "parity": result.parity.to_dict(), "quantized": result.quantized,
        "reference": "eager fp32 model of the run (and its OOD score) on its eval transform",
        "tlzoo_version": __version__,
    })
