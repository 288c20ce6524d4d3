"""tlzoo export: ONNX and torch.export files of a tiny run (conftest's `exported`), parity, predict from the files.

Edited, forged and crafted files: test_export_tampering.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from export_support import call
from reliability_support import cli_output, register_tiny

pytest.importorskip("onnxruntime")

PROB_TOLERANCE = 1e-4  # probabilities of an exported fp32 file against the run's own fp32 predict
INT8_PROB_TOLERANCE = 1e-2  # int8 weights move probabilities by a few 1e-4 on the tiny run


def predictions(capsys, model: Path, images: Path) -> list[dict]:
    code, out, err = cli_output(capsys, "predict", str(model), str(images), "--format", "json", "--top-k", "3")
    assert code == 0, err
    return json.loads(out)


def assert_same(ours: list[dict], theirs: list[dict], tolerance: float = PROB_TOLERANCE) -> None:
    assert [r["path"] for r in ours] == [r["path"] for r in theirs]
    for a, b in zip(ours, theirs):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]], a["path"]
        assert np.allclose([t["probability"] for t in a["top"]], [t["probability"] for t in b["top"]],
                           atol=tolerance), a["path"]


@pytest.mark.parametrize("name", ["best.onnx", "best.pt2", "../pre.onnx", "../pre.int8.onnx"])
def test_predict_on_exported_file_equals_predict_on_run_dir(exported, capsys, name):
    run_dir, val = exported
    tolerance = INT8_PROB_TOLERANCE if "int8" in name else PROB_TOLERANCE
    assert_same(predictions(capsys, run_dir / name, val), predictions(capsys, run_dir, val), tolerance)


@pytest.mark.parametrize("name", ["best.onnx", "best.pt2", "../pre.onnx"])
def test_unknown_decisions_of_exported_files_equal_the_run_directory(exported, capsys, name, tmp_path):
    """The graph's ood_score and the metadata's threshold give the run directory's unknown answers, at the
    run's own kept share and at another one chosen from the stored validation scores."""
    from PIL import Image

    run_dir, val = exported
    images = tmp_path / "images"
    shutil.copytree(val, images / "val")
    Image.new("RGB", (16, 16), (0, 0, 0)).save(images / "black.png")
    Image.fromarray((np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)).convert("RGB").save(
        images / "checkers.png")
    for keep in ([], ["--keep", "0.5"]):
        ours, theirs = (json.loads(cli_output(capsys, "predict", str(model), str(images), "--format", "json",
                                              *keep)[1]) for model in (run_dir / name, run_dir))
        assert [r["unknown"] for r in ours] == [r["unknown"] for r in theirs]
        assert np.allclose([r["ood_score"] for r in ours], [r["ood_score"] for r in theirs], atol=1e-4)
        assert_same(ours, theirs)
    assert {r["unknown"] for r in theirs} == {True, False}  # both answers occur at keep 0.5
    report = json.loads((run_dir / (name + ".parity.json")).read_text())["parity"]
    assert report["unknown_agreement"] == 1.0 and report["max_abs_score_diff"] < 1e-4


@pytest.mark.parametrize("name", ["best.onnx", "best.pt2", "../pre.onnx"])
def test_parity_is_stored_beside_the_file(exported, name):
    run_dir, _ = exported
    report = json.loads((run_dir / (name + ".parity.json")).read_text())
    assert report["parity"]["images"] == 9  # the run's whole validation split
    assert report["parity"]["top1_agreement"] == 1.0 and report["parity"]["passed"]
    assert report["parity"]["max_abs_logit_diff"] < 1e-4
    assert report["exporter"] in ("dynamo", "torchscript", "torch.export")


@pytest.mark.parametrize("name", ["best.onnx", "best.pt2"])
def test_evaluate_an_exported_file_on_its_runs_validation_split(exported, capsys, name):
    run_dir, _ = exported
    code, out, err = cli_output(capsys, "evaluate", str(run_dir / name), "--json")
    assert code == 0, err
    ours = json.loads(out)
    code, out, err = cli_output(capsys, "evaluate", str(run_dir), "--json")
    theirs = json.loads(out)
    assert ours["images"] == theirs["images"] == 9  # the run's whole validation split
    assert ours["confusion_matrix"] == theirs["confusion_matrix"] and ours["top1"] == theirs["top1"]
    assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-4)
    assert set(ours["per_class"]) == {"class0", "class1", "class2"}
    # the file's temperature and OOD score give the run directory's calibration and kept share
    assert ours["calibration"]["temperature"] == theirs["calibration"]["temperature"]
    assert ours["calibration"]["after"]["nll"] == pytest.approx(theirs["calibration"]["after"]["nll"], abs=1e-4)
    assert ours["unknown"]["kept"] == theirs["unknown"]["kept"]
    import tlzoo

    assert tlzoo.load(run_dir / name).evaluate() == ours  # the Python API gives what --json prints


def test_evaluate_an_exported_file_elsewhere_needs_labelled_data(exported, capsys, tmp_path):
    run_dir, val = exported
    pre = run_dir.parent / "pre.onnx"  # beside the run directory, not in it
    code, out, err = cli_output(capsys, "evaluate", str(pre))
    assert code == 2 and "is not inside the run directory it was exported from" in err and "--data FOLDER" in err
    rows = tmp_path / "rows.csv"
    code, out, err = cli_output(capsys, "evaluate", str(pre), "--data", str(val), "--per-image", str(rows))
    assert code == 0, err
    assert out.startswith("9 images  top-1 ") and len(rows.read_text().splitlines()) == 10


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_model_option_is_refused_for_an_exported_file(exported, capsys, command):
    run_dir, val = exported
    args = [command, str(run_dir / "best.onnx")] + ([str(val)] if command == "predict" else []) + ["--model", "last"]
    code, out, err = cli_output(capsys, *args)
    assert code == 2 and out == ""
    assert "--model last applies to run directories" in err and "is an exported file" in err


def test_onnx_metadata_carries_classes_and_preprocessing(exported):
    import onnx
    import onnxruntime as ort

    run_dir, _ = exported
    meta = json.loads({p.key: p.value for p in onnx.load(str(run_dir / "best.onnx")).metadata_props}["tlzoo"])
    sidecar = json.loads((run_dir / "best.json").read_text())
    assert meta["classes"] == sidecar["classes"] == ["class0", "class1", "class2"]
    assert meta["preprocessing"]["mean"] == sidecar["data_config"]["mean"]
    assert meta["preprocessing"]["center_crop"] == [16, 16]
    assert meta["input"] == {"dtype": "float32", "layout": "nchw", "shape": [None, 3, 16, 16]}  # as the graph
    assert meta["spec_hash"] == sidecar["spec_hash"]
    session = ort.InferenceSession(str(run_dir / "best.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, 16, 16]
    assert not isinstance(session.get_inputs()[0].shape[0], int)  # dynamic batch
    assert session.run(None, {"images": np.zeros((5, 3, 16, 16), np.float32)})[0].shape == (5, 3)


def test_preprocessing_inside_takes_uint8_nhwc(exported):
    import onnxruntime as ort

    from tlzoo.export.onnx_file import read_metadata

    run_dir, _ = exported
    pre = run_dir.parent / "pre.onnx"
    meta = read_metadata(pre)
    assert meta["input"] == {"dtype": "uint8", "layout": "nhwc", "shape": [None, 16, 16, 3]}
    assert meta["preprocessing"]["normalized_inside"] is True
    session = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    report = json.loads((run_dir.parent / "pre.onnx.parity.json").read_text())
    assert report["quantized"]["kept"] and report["quantized"]["parity"]["top1_agreement"] >= 0.99


# --- tampering: a clear error naming file and key, never a prediction -------------------------------

# --- the export itself ----------------------------------------------------------------------------

def test_disagreeing_export_fails_and_leaves_no_file(exported, capsys, tmp_path, monkeypatch):
    """Below --min-agreement the file is removed and the report says why (exported logits reversed here)."""
    from tlzoo.export import parity

    run_dir, _ = exported
    real = parity.exported_outputs
    monkeypatch.setattr(parity, "exported_outputs",
                        lambda run, inputs: [real(run, inputs)[0][:, ::-1].copy(), *real(run, inputs)[1:]])
    target = tmp_path / "bad.onnx"
    code, out, err = cli_output(capsys, "export", str(run_dir), "--out", str(target), "--exporter", "torchscript")
    assert code == 2 and "disagrees with the eager model" in err and "BELOW the required 0.9950" in err
    assert not target.exists()
    assert json.loads((tmp_path / "bad.onnx.parity.json").read_text())["parity"]["passed"] is False


def test_parity_numbers():
    from tlzoo.export.parity import compare, spread

    reference = [np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.2, 0.1]])]
    exported = [np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.2, 0.1]])]
    report = compare(reference, exported, "four", 0.995)
    assert report.top1_agreement == 0.75 and report.max_abs_logit_diff == 1.0 and not report.passed
    assert compare(reference, reference, "four", 0.995).passed
    # with OOD scores: the unknown decisions at the threshold must agree as well as the classes
    scores = np.array([0.1, 0.5, 0.29, 0.9])
    moved = np.array([0.1, 0.5, 0.31, 0.9])  # the third image crosses the threshold 0.3
    unknown = compare(reference + [scores], reference + [moved], "four", 0.7, threshold=0.3)
    assert unknown.unknown_agreement == 0.75 and abs(unknown.max_abs_score_diff - 0.02) < 1e-12
    assert unknown.passed and not compare(reference + [scores], reference + [moved], "four", 0.8, 0.3).passed
    # the threshold is one validation image's score: float noise on that image is a tie, not a disagreement
    at = np.array([0.1, 0.5, 0.3, 0.9], dtype=np.float32)
    tie = compare(reference + [at], reference + [at + np.float32(6e-7)], "four", 0.995, threshold=float(at[2]))
    assert tie.passed and tie.unknown_agreement == 1.0
    assert spread(list(range(10)), 4) == [0, 2, 5, 7] and spread([1, 2], 0) == [1, 2]


class _DataDependent(torch.nn.Module):
    def forward(self, x):
        if x.mean() > 0:  # torch.export refuses a branch on data; tracing keeps the side it saw
            return x.flatten(1)[:, :3] * 2
        return x.flatten(1)[:, :3]


class _CumMax(torch.nn.Module):
    def forward(self, x):
        return torch.cummax(x.flatten(1), 1)[0][:, :3]


def test_dynamo_failure_falls_back_to_torchscript_and_says_why(tmp_path):
    from tlzoo.export.onnx_file import write_graph

    lines = []
    used = write_graph(_DataDependent(), torch.rand(2, 3, 4, 4), tmp_path / "m.onnx", log=lines.append)
    assert used == "torchscript" and (tmp_path / "m.onnx").stat().st_size > 0
    assert len(lines) == 1 and "dynamo exporter failed" in lines[0] and "data-dependent" in lines[0]
    assert "falling back to the TorchScript-based exporter" in lines[0]


def test_unsupported_operator_is_named_with_the_way_out(tmp_path):
    from tlzoo.errors import TlzooError
    from tlzoo.export.onnx_file import write_graph

    with pytest.raises(TlzooError) as caught:
        write_graph(_CumMax(), torch.rand(2, 3, 4, 4), tmp_path / "m.onnx", log=lambda line: None)
    assert "operator aten::cummax cannot be exported to ONNX opset 18" in str(caught.value)
    assert "--format pt2" in caught.value.hint and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("args, expected", [
    (["--format", "tflite"], "--format 'tflite': choose onnx or pt2"),
    (["--format", "pt2", "--quantize", "dynamic"], "--quantize dynamic works on ONNX files"),
    (["--model", "worst"], "choose 'best' or 'last'"),
])
def test_bad_export_options_are_user_errors(exported, capsys, args, expected):
    run_dir, _ = exported
    code, _, err = cli_output(capsys, "export", str(run_dir), *args)
    assert code == 2 and expected in err


def test_python_api_is_the_callable_room(exported, tmp_path):
    import tlzoo.export

    run_dir, _ = exported
    register_tiny()
    result = tlzoo.export(run_dir, format="pt2", out=tmp_path / "api.pt2", parity_images=4)
    assert result.parity.images == 4 and result.parity.passed and (tmp_path / "api.pt2.json").exists()
    assert "4 of 9 validation images" in result.parity.sample


@pytest.mark.slow
def test_shipped_lite0_exports_with_parity(tmp_path, capsys):
    """The default backbone with its real weights: a 1-epoch head-only run, exported by the default path."""
    from support import make_image_folder

    root = make_image_folder(tmp_path / "images", classes=3, per_class=4, size=64, val_per_class=3)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "name": "lite0", "backbone": "efficientnet_lite0",
        "data": {"reader": {"name": "imagefolder", "options": {"root": str(root), "train": "train", "val": "val"}},
                 "batch_size": 4, "num_workers": 0},
        "train": {"strategy": "head_only", "epochs": 1, "precision": "fp32"},  # fp32: run-dir predict is eager
        "cache": {"enabled": False}, "output": str(tmp_path / "runs")}))
    run_dir = tmp_path / "run"
    call("run", str(spec), "--output", str(run_dir))
    code, out, err = cli_output(capsys, "export", str(run_dir))
    assert code == 0, err
    report = json.loads((run_dir / "best.onnx.parity.json").read_text())
    assert report["parity"]["top1_agreement"] == 1.0 and report["parity"]["max_abs_logit_diff"] < 1e-3
    assert_same(predictions(capsys, run_dir / "best.onnx", root / "val"), predictions(capsys, run_dir, root / "val"))
