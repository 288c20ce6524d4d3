"""ONNX files: writing (dynamo exporter, else TorchScript), metadata inside, reading, int8.

The metadata travels inside the file (`metadata_props`, key "tlzoo", JSON), so a
consumer needs nothing beside it. The "model" checksum covers the serialized
graph (weights included), so an edited graph or a graph given another file's
metadata is refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Callable

import torch

from tlzoo.errors import TlzooError
from tlzoo.export import metadata

METADATA_KEY = "tlzoo"
DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise TlzooError(f"ONNX export and prediction need onnx and onnxruntime ({exc.name} is not installed)",
                         "pip install 'tlzoo[export]'") from None


def operator_of(error: BaseException) -> str | None:
    """The ATen operator an exporter could not translate, when its message names one."""
    text = "".join(str(e) for e in (error, error.__cause__, error.__context__) if e is not None)
    named = re.search(r"ONNX export of operator ([A-Za-z0-9_]+)", text)  # the TorchScript exporter's symbolics
    if named:
        return f"aten::{named.group(1)}"
    found = re.search(r"aten::[A-Za-z0-9_.]+|torch\.ops\.aten\.[A-Za-z0-9_.]+|aten\.[A-Za-z0-9_]+(?:\.[A-Za-z_]+)?",
                      text)
    return found.group(0).replace("torch.ops.", "").replace("aten.", "aten::", 1) if found else None


def _first_line(error: BaseException) -> str:
    """The line that says what went wrong (the dynamo exporter puts it under '## Exception summary')."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1]
        text = re.sub(r"<class '(?:[\w]+\.)*(\w+)'>", r"\1", text)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return (lines[0] if lines else type(error).__name__)[:300]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def _dynamo(module, example, path: Path, opset: int, outputs: list[str]) -> None:
    import onnxscript  # noqa: F401  (the dynamo exporter needs it; ImportError means: fall back)

    batch = torch.export.Dim("batch", min=1)
    with _quiet():
        torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=outputs,
                          dynamic_shapes=({0: batch},), external_data=False, verbose=False)


@contextlib.contextmanager
def _quiet():
    """Silence an exporter: both narrate on stdout (tlzoo's results go there), torch's loggers dump
    whole graphs when a capture fails, and the TorchScript exporter's C++ side prints the graph to
    file descriptor 1. What went wrong is in the exception, which the caller reports."""
    import ctypes
    import logging

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    logging.disable(logging.CRITICAL)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                ctypes.CDLL(None).fflush(None)  # C/C++ buffers still aimed at /dev/null
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        logging.disable(logging.NOTSET)


def _torchscript(module, example, path: Path, opset: int, outputs: list[str]) -> None:
    with _quiet():
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=outputs,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in outputs}})


def write_graph(module: torch.nn.Module, example: torch.Tensor, path: Path, opset: int = DEFAULT_OPSET,
                exporter: str = "auto", log: Callable[[str], None] = print, outputs: tuple[str, ...] = (OUTPUT_NAME,)
                ) -> str:
    """Export `module` to `path` with a dynamic batch; returns the exporter used ('dynamo' or 'torchscript').

    `outputs` names the module's outputs: the logits, and the OOD score when the module returns one."""
    outputs = list(outputs)
    require_onnx()
    tried: list[str] = []
    operator = None
    if exporter in ("auto", "dynamo"):
        try:
            _dynamo(module, example, path, opset, outputs)
            return "dynamo"
        except ImportError as exc:
            tried.append(f"dynamo exporter unavailable ({exc.name} is not installed)")
        except Exception as exc:  # the exporter raises many types; each is a reason to try the other
            operator = operator_of(exc)
            tried.append(f"dynamo exporter failed: {_first_line(exc)}")
        if exporter == "auto":
            log(f"{tried[-1]}; falling back to the TorchScript-based exporter")
    if exporter in ("auto", "torchscript"):
        try:
            _torchscript(module, example, path, opset, outputs)
            return "torchscript"
        except Exception as exc:
            operator = operator_of(exc) or operator
            tried.append(f"TorchScript exporter failed: {_first_line(exc)}")
    path.unlink(missing_ok=True)
    named = f"operator {operator} cannot be exported to ONNX opset {opset}" if operator else \
        f"the model cannot be exported to ONNX opset {opset}"
    raise TlzooError(f"{named} ({'; '.join(tried)})",
                     f"try a newer --opset (up to {max(opset, 20)}), or --format pt2 (torch.export, no ONNX "
                     "operator set), or a backbone without this operator")


def graph_checksum(model) -> str:
    """Checksum of the graph and its weights, independent of metadata_props."""
    return metadata.checksum(model.graph.SerializeToString(deterministic=True))


def embed(path: Path, meta: dict) -> dict:
    """Seal `meta` against the graph at `path` and store it inside the file; returns the sealed metadata."""
    import onnx

    model = onnx.load(str(path))
    sealed = metadata.seal(meta, graph_checksum(model))
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(sealed))
    onnx.save(model, str(path))
    return sealed


def read_metadata(path: Path) -> dict:
    """The verified metadata of an exported ONNX file (TlzooError naming file and key otherwise)."""
    require_onnx()
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise TlzooError(f"{path} is not a readable ONNX file: {_first_line(exc)}",
                         "pass a file written by `tlzoo export --format onnx`") from None
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise TlzooError(f"{path} has no tlzoo metadata (metadata_props key {METADATA_KEY!r} is missing)",
                         "export the run with `tlzoo export RUN_DIR --format onnx`; tlzoo never guesses "
                         "an exported model's preprocessing or classes")
    try:
        meta = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise TlzooError(f"{path}: metadata_props key {METADATA_KEY!r} is not valid JSON ({exc})",
                         "export the run again") from None
    meta = metadata.verify(meta, path, graph_checksum(model))
    metadata.check_graph(meta, path, *_graph_io(model))
    return meta


def _graph_io(model) -> tuple[str, list, int | None, int]:
    """(input dtype, input shape with None for a symbolic size, logits per image or None, outputs)."""
    from onnx.helper import tensor_dtype_to_np_dtype

    def dims(value) -> list:
        return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]

    first = model.graph.input[0]
    outputs = dims(model.graph.output[0])
    dtype = tensor_dtype_to_np_dtype(first.type.tensor_type.elem_type).name
    return dtype, dims(first), outputs[1] if len(outputs) == 2 else None, len(model.graph.output)


def session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session."""
    require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are noise for a user
    # idle threads sleep instead of spinning: on a machine shared with other work (or with torch's own
    # threads in the parity check) spinning workers steal the cores the busy ones need
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runner(path: Path, threads: int | None = None) -> Callable:
    """numpy batch -> [numpy logits] or [logits, OOD scores]: the graph's outputs in order."""
    sess = session(path, threads)
    name = sess.get_inputs()[0].name
    return lambda batch: sess.run(None, {name: batch})


def quantize_dynamic(source: Path, target: Path) -> None:
    """int8 weights (onnxruntime dynamic quantization: MatMul and Conv)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic as ort_quantize

    # the quantizer advises pre-processing on the root logger; dynamic int8 is checked by parity instead
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            ort_quantize(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
