"""The Python API (`import tlzoo`): cheap to import, the README's example runs, errors are TlzooError."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from PIL import Image

import tlzoo
from tlzoo.errors import SpecError, TlzooError

from conftest import REPO, cache_folder_with_listing
from support import TINY, make_image_folder, write_spec

# the README example's own paths, replaced by a tiny run's (each must still be in the README)
README_PATHS = ("examples/flowers12.json", "../shared/datasets/flowers12/test/daisy")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLZOO_CACHE_DIR", str(cache_folder_with_listing(tmp_path / "cache")))


def readme_python_block() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_import_tlzoo_loads_no_torch():
    code = ("import sys, time; t = time.perf_counter(); import tlzoo; seconds = time.perf_counter() - t; "
            "tlzoo.run, tlzoo.load, tlzoo.list_backbones; "
            "print(seconds, 'torch' in sys.modules, sorted(set(tlzoo.__all__) - set(dir(tlzoo))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    seconds, torch_loaded, missing = float(out[0]), out[1], " ".join(out[2:])
    assert torch_loaded == "False", "importing tlzoo (and looking up its functions) imported torch"
    assert missing == "[]"
    assert seconds < 1.0, f"import tlzoo took {seconds:.2f} s"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        tlzoo.trian  # noqa: B018


def test_readme_example_runs_on_a_tiny_run(tmp_path, tiny_backbone, capsys, monkeypatch):
    images = make_image_folder(tmp_path / "images")
    spec = write_spec(tmp_path, images)
    code = readme_python_block()
    for path, replacement in zip(README_PATHS, (spec, images / "val" / "class0")):
        assert path in code, f"the README's Python example no longer uses {path}"
        code = code.replace(path, str(replacement))
    code = code.replace('"efficientnet_lite*"', f'"{TINY}*"').replace("offline=True", "pretrained=True")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (Python API)", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    run_dir, best_epoch, top1 = lines[0].split()
    assert (tmp_path / "runs").resolve() in (tmp_path / run_dir).resolve().parents
    assert json.loads((tmp_path / run_dir / "summary.json").read_text())["best_epoch"] == int(best_epoch)
    assert 0 <= float(top1) <= 1
    assert lines[1].startswith("['class0', 'class1', 'class2'] (3, 32, 32)")
    assert lines[2].startswith(str(images / "val" / "class0" / "0.png"))
    assert lines[-1] == f"['{TINY}']"


def test_run_takes_a_dict_with_overrides_and_reports_best(tmp_path, tiny_backbone):
    images = make_image_folder(tmp_path / "images", per_class=4, val_per_class=2)
    raw = json.loads(write_spec(tmp_path, images).read_text())
    result = tlzoo.run(raw, overrides={"train.epochs": 1}, output=tmp_path / "out")
    assert result.run_dir == tmp_path / "out"
    assert result.summary["epochs_run"] == 1
    assert result.best == json.loads((tmp_path / "out" / "summary.json").read_text())["best"]
    assert raw["train"]["epochs"] == 2, "the caller's dict was changed"
    model = result.load()
    report = model.evaluate(images / "val")
    assert report["images"] == 6 and report["top1"] == pytest.approx(result.best["val_top1"])
    assert set(report["per_class_accuracy"]) == {"class0", "class1", "class2"}


def test_predict_takes_pil_images_and_reports_unreadable_files(tmp_path, tiny_backbone):
    images = make_image_folder(tmp_path / "images", per_class=4, val_per_class=2)
    result = tlzoo.run(write_spec(tmp_path, images), overrides=["train.epochs=1"])
    model = tlzoo.load(result.run_dir)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    photo = images / "val" / "class1" / "0.png"
    with Image.open(photo) as opened:
        in_memory = opened.convert("RGBA")  # converted to RGB on the way in
    got = model.predict([photo, in_memory, broken], top_k=2)
    assert [p.path for p in got] == [photo, None, broken]
    assert [c for c, _ in got[0].top] == [c for c, _ in got[1].top]  # the same picture, from disk and memory
    assert [p for _, p in got[0].top] == pytest.approx([p for _, p in got[1].top])
    assert len(got[0].top) == 2 and got[0].top[0][0] in model.classes
    assert got[2].error and not got[2].top


def test_errors_are_tlzoo_errors(tmp_path, tiny_backbone):
    images = make_image_folder(tmp_path / "images", per_class=2, val_per_class=1)
    spec = write_spec(tmp_path, images)
    with pytest.raises(SpecError, match="train.epochs"):
        tlzoo.run(spec, overrides={"train.epochs": 0})
    with pytest.raises(SpecError, match="backbone.name"):
        tlzoo.run(spec, overrides={"backbone.name": "resnt50"})
    with pytest.raises(TlzooError, match="does not exist"):
        tlzoo.load(tmp_path / "no-such-run")
    with pytest.raises(TlzooError, match="a spec file path, a dict or a RunSpec"):
        tlzoo.run(42)


def test_exported_files_go_to_tlzoo_export(tmp_path):
    exported = tmp_path / "model.onnx"
    exported.write_bytes(b"\0")  # not a model: whoever reads it must refuse it as a user error
    with pytest.raises(TlzooError, match="model.onnx"):
        tlzoo.load(exported)
    with pytest.raises(TlzooError, match="does not exist"):
        tlzoo.load(tmp_path / "missing.pt2")


def test_predict_applies_the_file_caps_to_pil_images_and_reports_each_bad_one(tmp_path, tiny_backbone, monkeypatch):
    """Issue 20 item 4: a 1x60000 image in memory asked for 16.6 GB once resized; a 0x0 one aborted the call."""
    import tlzoo.data.images as images_module

    images = make_image_folder(tmp_path / "images", per_class=4, val_per_class=2)
    model = tlzoo.load(tlzoo.run(write_spec(tmp_path, images), overrides=["train.epochs=1"]).run_dir)
    with Image.open(images / "val" / "class1" / "0.png") as opened:
        fine = opened.convert("RGB")
    thin, empty, big = Image.new("RGB", (1, 40000)), Image.new("RGB", (0, 0)), Image.new("L", (300, 200))
    monkeypatch.setattr(images_module, "MAX_PIXELS", 50_000)  # the 300x200 image stands for one over 64 Mpx
    got = model.predict([thin, fine, empty, big], top_k=1)
    assert "aspect ratio 40000:1, the cap is 50:1" in got[0].error and not got[0].top
    assert got[1].error is None and got[1].top[0][0] in model.classes
    assert "no pixels (0x0)" in got[2].error and not got[2].top
    assert "too large: 300x200" in got[3].error and not got[3].top
    assert got[0].error.startswith("image too thin") and [p.path for p in got] == [None] * 4
