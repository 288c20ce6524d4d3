"""evaluate/predict check a run's model sidecar (best.json) before building anything from it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tlzoo.engine.inference import load_run
from tlzoo.engine.run import run_spec
from tlzoo.errors import TlzooError
from tlzoo.registry import get_registry
from tlzoo.spec import load_spec

from reliability_support import cli, make_images, register_tiny, write_spec


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny 1-epoch run, shared: each test tampers with a copy."""
    import tlzoo.runtime.device as runtime

    register_tiny()
    folder = tmp_path_factory.mktemp("sidecar")
    spec = write_spec(folder, make_images(folder / "data"), train={"epochs": 1})
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime, "available_cpus", lambda: 1)
        run_dir = run_spec(load_spec(spec, get_registry()), folder / "run").run_dir
    torch.set_num_threads(threads)
    return run_dir, folder / "data"


def reverse_classes(meta):
    meta["classes"].reverse()


def drop(key):
    return lambda meta: meta.pop(key)


def setter(*path_and_value):
    *path, value = path_and_value

    def change(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


TAMPERINGS = [
    ("classes reversed", reverse_classes, r"disagrees with the metadata inside .*best.safetensors on classes"),
    ("classes deleted", drop("classes"), r"best.json is damaged: classes: Field required"),
    ("eval deleted", drop("eval"), r"best.json is damaged: eval: Field required"),
    ("head deleted", drop("head"), r"best.json is damaged: head: Field required"),
    ("eval.batch_size 0", setter("eval", "batch_size", 0), r"eval.batch_size: Input should be greater than 0"),
    ("head.hidden 1e9", setter("head", "hidden", 10**9), r"head.hidden: Input should be less than or equal"),
    ("input_size 12000", setter("data_config", "input_size", [3, 12000, 12000]), r"data_config.input_size:"),
    ("crop_pct 0", setter("data_config", "crop_pct", 0), r"data_config.crop_pct: Input should be greater than 0"),
    ("interpolation nope", setter("data_config", "interpolation", "nope"), r"data_config.interpolation:"),
    ("precision fp8", setter("eval", "precision", "fp8"), r"eval.precision:"),
    ("head.hidden 8 (valid, but not the run's)", setter("head", "hidden", 8), r"disagrees .* on head"),
]


@pytest.mark.parametrize("what, tamper, message", TAMPERINGS, ids=[t[0] for t in TAMPERINGS])
def test_a_tampered_sidecar_is_refused_naming_file_and_field(tmp_path, finished, what, tamper, message):
    run_dir = shutil.copytree(finished[0], tmp_path / "run")
    meta = json.loads((run_dir / "best.json").read_text())
    tamper(meta)
    (run_dir / "best.json").write_text(json.dumps(meta))
    with pytest.raises(TlzooError, match=message):
        load_run(run_dir, get_registry())


def test_a_sidecar_that_is_a_list_or_missing(tmp_path, finished, capsys):
    run_dir = shutil.copytree(finished[0], tmp_path / "run")
    (run_dir / "best.json").write_text("[1, 2]")
    image = next((finished[1] / "val" / "class0").iterdir())
    code, err = cli(capsys, "predict", str(run_dir), str(image))
    assert code == 2 and "best.json is not a JSON object" in err and "Traceback" not in err, err
    (run_dir / "best.json").unlink()  # the copy inside the weights file is enough
    assert load_run(run_dir, get_registry()).classes == ["class0", "class1", "class2"]


def test_reversed_classes_never_reach_predict(tmp_path, finished, capsys):
    run_dir = shutil.copytree(finished[0], tmp_path / "run")
    meta = json.loads((run_dir / "best.json").read_text())
    meta["classes"].reverse()
    (run_dir / "best.json").write_text(json.dumps(meta))
    image = next((finished[1] / "val" / "class0").iterdir())
    code, err = cli(capsys, "predict", str(run_dir), str(image))
    assert code == 2 and "on classes" in err and "HINT" in err, err
