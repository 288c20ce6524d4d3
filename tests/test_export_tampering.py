"""Exported files edited after export, forged with their checksums sealed again, or crafted to run code:
each is refused with exit 2 naming what was changed, and no payload runs (conftest's `exported`)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from reliability_support import cli_output

pytest.importorskip("onnxruntime")


def edit_onnx_metadata(source: Path, target: Path, change) -> None:
    import onnx

    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    value = change(json.loads(props["tlzoo"]))
    if value is not None:
        model.metadata_props.add(key="tlzoo", value=json.dumps(value))
    onnx.save(model, str(target))


def changed_mean(meta):
    meta["preprocessing"]["mean"] = [0.0, 0.0, 0.0]
    return meta


def raised_threshold(meta):
    meta["trust"]["unknown"]["threshold"] *= 10
    return meta


def resealed(change):
    """The change, with every checksum computed again: what a deliberate edit would do."""
    from tlzoo.export.metadata import seal

    def edit(meta):
        model = meta["checksums"]["model"]
        return seal(change(meta), model)
    return edit


def dropped_classes(meta):
    del meta["classes"]
    return meta


def swapped_classes(meta):
    meta["classes"] = meta["classes"][::-1]
    return meta


@pytest.mark.parametrize("change, expected", [
    (changed_mean, "metadata key 'preprocessing' was changed after export"),
    (swapped_classes, "metadata key 'classes' was changed after export"),
    (dropped_classes, "metadata key(s) missing: classes"),
    (raised_threshold, "metadata key 'trust' was changed after export"),
    (resealed(raised_threshold), "is not the one its validation scores give"),
    (lambda meta: None, "has no tlzoo metadata"),
])
def test_tampered_onnx_metadata_is_refused(exported, capsys, tmp_path, change, expected):
    run_dir, val = exported
    target = tmp_path / "edited.onnx"
    edit_onnx_metadata(run_dir / "best.onnx", target, change)
    code, out, err = cli_output(capsys, "predict", str(target), str(val))
    assert code == 2 and out == ""
    assert str(target) in err and expected in err and "Traceback" not in err


def test_onnx_graph_with_another_files_metadata_is_refused(exported, capsys, tmp_path):
    """The uint8 graph given the float graph's metadata would be fed wrongly: the model checksum stops it."""
    import onnx

    run_dir, val = exported
    meta = {p.key: p.value for p in onnx.load(str(run_dir / "best.onnx")).metadata_props}["tlzoo"]
    target = tmp_path / "mixed.onnx"
    edit_onnx_metadata(run_dir.parent / "pre.onnx", target, lambda _: json.loads(meta))
    code, out, err = cli_output(capsys, "predict", str(target), str(val))
    assert code == 2 and out == "" and "the model does not match its metadata" in err


@pytest.mark.parametrize("damage, expected", [
    ("missing sidecar", "best.pt2.json is missing"),
    ("swapped classes", "metadata key 'classes' was changed after export"),
    ("other model", "the model does not match its metadata"),
])
def test_tampered_pt2_metadata_is_refused(exported, capsys, tmp_path, damage, expected):
    run_dir, val = exported
    target = tmp_path / "best.pt2"
    shutil.copy(run_dir / "best.pt2", target)
    sidecar = json.loads((run_dir / "best.pt2.json").read_text())
    if damage == "swapped classes":
        sidecar = swapped_classes(sidecar)
    if damage == "other model":
        with open(target, "ab") as handle:
            handle.write(b"\0")
    if damage != "missing sidecar":
        (tmp_path / "best.pt2.json").write_text(json.dumps(sidecar))
    code, out, err = cli_output(capsys, "predict", str(target), str(val))
    assert code == 2 and out == "" and expected in err and "Traceback" not in err


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _edit_json(files: dict, name: str, change) -> None:
    body = json.loads(files[name])
    change(body)
    files[name] = json.dumps(body).encode()


def _plant(kind: str, files: dict, top: str, marker: Path) -> None:
    """Each way torch.export.load can be made to run code (here: create `marker`)."""
    import pickle

    payload = pickle.dumps(_Payload(marker))
    weights, constants, program = f"{top}/data/weights/", f"{top}/data/constants/", f"{top}/models/model.json"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    if kind == "truthy use_pickle":  # torch tests `if use_pickle:`, so 1 unpickles as true does
        def weight_as_pickle(config):
            first = next(iter(config["config"].values()))
            first["use_pickle"] = 1
            files[weights + first["path_name"]] = payload
        _edit_json(files, weights + "model_weights_config.json", weight_as_pickle)
    elif kind == "opaque constant":  # data/constants/opaque_obj_* goes to plain pickle.loads
        files[constants + "opaque_obj_0"] = payload + b"\0" * (-len(payload) % 4)
        meta = {"dtype": 7, "sizes": [{"as_int": 1}], "requires_grad": False, "device": {"type": "cpu", "index": None},
                "strides": [{"as_int": 1}], "storage_offset": {"as_int": 0}, "layout": 7}
        _edit_json(files, constants + "model_constants_config.json", lambda config: config["config"].__setitem__(
            "planted", {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False, "tensor_meta": meta}))
    elif kind in ("legacy weights", "legacy constants"):  # retried with weights_only=False
        files[(weights if kind == "legacy weights" else constants) + "model.pt"] = payload
    elif kind == "sample inputs":  # retried with weights_only=False
        files[f"{top}/data/sample_inputs/model.pt"] = payload
    elif kind == "symbolic size":  # sympy.sympify evaluates the text
        files[program] = files[program].replace(b'"expr_str": "', f'"expr_str": "{code} or '.encode(), 1)
    elif kind == "guard code":  # compiled into the module's guard function
        _edit_json(files, program, lambda body: body.__setitem__("guards_code", [f"{code} is None"]))
    elif kind == "file operator":  # aten::from_file(shared=True) creates its file
        def from_file(body):
            body["graph_module"]["graph"]["nodes"][-1].update(target="torch.ops.aten.from_file.default", inputs=[
                {"name": "filename", "arg": {"as_string": str(marker)}, "kind": 1},
                {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
                {"name": "size", "arg": {"as_int": 4}, "kind": 1}])
        _edit_json(files, program, from_file)


CRAFTED = {"truthy use_pickle": "use_pickle is 1", "opaque constant": "'opaque_obj_0', not a raw tensor",
           "legacy weights": "data/weights/model.pt' is not something", "legacy constants":
           "data/constants/model.pt' is not something", "sample inputs": "does not load safely",
           "symbolic size": "not plain arithmetic", "guard code": "carries guard code",
           "file operator": "aten.from_file.default, which takes text other than a mode word (filename)"}


def crafted_pt2(exported, tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """best.pt2 with a planted payload, its sidecar re-sealed as a forger would; returns (file, marker)."""
    from tlzoo.export import metadata, pt2_file

    run_dir, _ = exported
    marker, target = tmp_path / "pwned", tmp_path / "evil.pt2"
    with zipfile.ZipFile(run_dir / "best.pt2") as source:
        files = {item.filename: source.read(item) for item in source.infolist()}
    _plant(kind, files, next(iter(files)).split("/")[0], marker)
    with zipfile.ZipFile(target, "w") as out:
        for name, data in files.items():
            out.writestr(name, data)
    body = json.loads((run_dir / "best.pt2.json").read_text())
    body.pop("checksums")  # a forger re-seals: the checksums cannot stop this, the allow-list must
    pt2_file.sidecar_of(target).write_text(json.dumps(metadata.seal(body, pt2_file.file_checksum(target))))
    return target, marker


@pytest.mark.parametrize("kind", CRAFTED)
def test_crafted_pt2_is_refused_unread(exported, capsys, tmp_path, kind):
    """predict and tlzoo.load refuse each crafted archive by the allow-list; the payload never runs."""
    import tlzoo
    from tlzoo.errors import TlzooError

    target, marker = crafted_pt2(exported, tmp_path, kind)
    code, out, err = cli_output(capsys, "predict", str(target), str(exported[1]))
    assert code == 2 and out == "" and CRAFTED[kind] in err and "Traceback" not in err
    with pytest.raises(TlzooError, match="export the run again"):
        tlzoo.load(target)
    assert not marker.exists()


@pytest.mark.parametrize("kind", CRAFTED)
def test_crafted_pt2_payloads_are_live(exported, tmp_path, kind):
    """The control for the test above: torch's own loader (no tlzoo check) runs each payload."""
    target, marker = crafted_pt2(exported, tmp_path, kind)
    try:
        torch.export.load(str(target)).module()(torch.zeros(2, 3, 16, 16))
    except Exception:
        pass  # the payload ran while loading; the program it leaves behind is broken
    assert marker.exists()


def _set(meta: dict, dotted: str, value) -> dict:
    *path, last = dotted.split(".")
    place = meta
    for key in path:
        place = place[key]
    place[last] = value
    return meta


# (what a forger or a hand edit sets, re-sealed so the checksums pass; the words the error must hold)
OUT_OF_RANGE = {
    "crop 0": ({"preprocessing.center_crop": [0, 16]}, "preprocessing.center_crop.0: Input should be greater"),
    "NaN std": ({"preprocessing.std": [0.2, float("nan"), 0.2]}, "preprocessing.std.1: Input should be a finite"),
    "size as text": ({"preprocessing.center_crop": ["16", "16"]}, "preprocessing.center_crop.0: Input should be a "
                     "valid integer"),
    "mean as text": ({"preprocessing.mean": "0.5"}, "preprocessing.mean: Input should be a valid list"),
    "unknown interpolation": ({"preprocessing.interpolation": "cubic"}, "preprocessing.interpolation: Input should"),
    "crop_pct 0": ({"preprocessing.crop_pct": 0}, "preprocessing.crop_pct: Input should be greater"),
    "resize against crop": ({"preprocessing.resize_shorter_side": 999}, "resize_shorter_side 999 and resize None "
                            "disagree"),
    "no classes": ({"classes": []}, "classes: List should have at least 1 item"),
    "twice a class": ({"classes": ["class0", "class0", "class2"]}, "a class name appears twice"),
    "float input as nhwc": ({"input.layout": "nhwc", "input.shape": [None, 16, 16, 3]},
                            "float32 input is NCHW"),
    "uint8 declared for a float graph": ({"input.dtype": "uint8", "preprocessing.normalized_inside": True},
                                         "the graph takes float32 [N,3,16,16] but metadata key 'input' declares "
                                         "uint8 [N,3,16,16]"),
    "size the graph does not take": ({"preprocessing.center_crop": [32, 32], "preprocessing.resize_shorter_side": 32,
                                      "preprocessing.crop_pct": 1.0, "input.shape": [None, 3, 32, 32]},
                                     "the graph takes float32 [N,3,16,16] but metadata key 'input' declares float32 "
                                     "[N,3,32,32]"),
    "unknown key": ({"temperature": 0.5}, "temperature: Extra inputs are not permitted"),
}


def _resealed(run_dir: Path, tmp_path: Path, edits: dict, suffix: str) -> Path:
    """The run's exported file with edited metadata, sealed again (checksums pass; the values must not)."""
    import onnx

    from tlzoo.export import metadata, onnx_file, pt2_file

    target = tmp_path / f"edited{suffix}"
    shutil.copy(run_dir / f"best{suffix}", target)
    if suffix == ".pt2":
        body = json.loads((run_dir / "best.pt2.json").read_text())
    else:
        body = json.loads({p.key: p.value for p in onnx.load(str(target)).metadata_props}["tlzoo"])
    body.pop("checksums")
    for dotted, value in edits.items():
        _set(body, dotted, value)
    if suffix == ".pt2":
        pt2_file.sidecar_of(target).write_text(json.dumps(metadata.seal(body, pt2_file.file_checksum(target))))
    else:
        onnx_file.embed(target, body)
    return target


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
@pytest.mark.parametrize("case", OUT_OF_RANGE)
def test_out_of_range_metadata_is_refused(exported, capsys, tmp_path, case, suffix):
    """Every value is range-checked and the declared input is the graph's: exit 2 naming the key, never a
    traceback or a NaN prediction."""
    run_dir, val = exported
    edits, expected = OUT_OF_RANGE[case]
    target = _resealed(run_dir, tmp_path, edits, suffix)
    code, out, err = cli_output(capsys, "predict", str(target), str(val))
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert expected in err and str(target) in err
