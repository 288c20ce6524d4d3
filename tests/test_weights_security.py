"""Weight files run no code: malicious pickles are refused everywhere, and the source keeps it that way."""

from __future__ import annotations

import ast
import pickle
import struct
from pathlib import Path

import pytest
import torch

from tlzoo.errors import WeightsError
from tlzoo.model.build import build_model
from tlzoo.spec import HeadSpec, ResolvedComponent, WeightsFile
from tlzoo.model.weights import load_state_file
from tlzoo.registry import get_registry

from reliability_support import TINY, build_tiny, cli, make_images, register_tiny, write_spec

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


class Exploit:
    """Unpickling this calls open(marker, "w"): a file appears if the pickle ever runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_files(folder: Path) -> tuple[Path, list[Path]]:
    """The marker path, and malicious files: a legacy pickle and a torch.save zip, as .pt and .pth."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "PWNED"
    raw = folder / "raw.pt"
    raw.write_bytes(pickle.dumps({"stem.0.weight": Exploit(marker)}, protocol=2))
    zipped = folder / "zipped.pth"
    torch.save({"state_dict": {"stem.0.weight": Exploit(marker)}}, zipped)
    assert not marker.exists()
    return marker, [raw, zipped]


def tiny_component() -> ResolvedComponent:
    register_tiny()
    component = get_registry().catalog("backbones").get_component(TINY)
    return ResolvedComponent(component, component.options())


def test_exploit_really_runs_when_unpickled_unsafely(tmp_path):
    """The exploit is live: plain pickle creates the marker (so the refusals below mean something)."""
    marker, (raw, _) = evil_files(tmp_path)
    pickle.loads(raw.read_bytes())  # the unsafe thing tlzoo never does
    assert marker.exists()


def test_malicious_backbone_weights_are_refused_by_build_model(tmp_path):
    marker, files = evil_files(tmp_path)
    for path in files:
        with pytest.raises(WeightsError, match="refused to load .* asks to run code"):
            build_model(tiny_component(), WeightsFile(path=str(path)), HeadSpec(), 3)
    assert not marker.exists()


def test_malicious_backbone_weights_are_refused_by_tlzoo_run(tmp_path, capsys):
    marker, files = evil_files(tmp_path / "evil")
    root = make_images(tmp_path / "data", train=2, val=1)
    for path in files:
        spec = write_spec(tmp_path, root, backbone={"name": TINY, "weights": {"path": str(path)}})
        code, err = cli(capsys, "run", str(spec))
        assert code == 2 and "refused to load" in err and str(path) in err, err
    assert not marker.exists()


@pytest.fixture
def finished_run(tmp_path_factory, capsys) -> Path:
    """A real (one-epoch) run directory to tamper with."""
    folder = tmp_path_factory.mktemp("run")
    spec = write_spec(folder, make_images(folder / "data", train=2, val=1), train={"epochs": 1})
    code, err = cli(capsys, "run", str(spec), "--output", str(folder / "run"))
    assert code == 0, err
    return folder


def copy_run(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source / "run", target)
    return target


def test_malicious_resume_checkpoints_are_refused(tmp_path, finished_run, capsys):
    marker, (raw, zipped) = evil_files(tmp_path / "evil")
    spec = finished_run / "spec.json"
    # a last.safetensors replaced by a pickle
    run_dir = copy_run(finished_run, tmp_path / "a")
    (run_dir / "last.safetensors").write_bytes(zipped.read_bytes())
    code, err = cli(capsys, "run", str(spec), "--resume", str(run_dir))
    assert code == 2 and "not a valid safetensors file" in err, err
    # no last.safetensors, but a last.pt (legacy pickle and torch.save zip)
    for evil in (raw, zipped):
        run_dir = copy_run(finished_run, tmp_path / f"b-{evil.stem}")
        (run_dir / "last.safetensors").unlink()
        (run_dir / "last.pt").write_bytes(evil.read_bytes())
        code, err = cli(capsys, "run", str(spec), "--resume", str(run_dir))
        assert code == 2 and "refused to load" in err and "last.pt" in err, err
    assert not marker.exists()


def test_malicious_best_weights_are_refused_by_predict_and_evaluate(tmp_path, finished_run, capsys):
    marker, (_, zipped) = evil_files(tmp_path / "evil")
    run_dir = copy_run(finished_run, tmp_path / "run")
    (run_dir / "best.safetensors").write_bytes(zipped.read_bytes())
    image = next((finished_run / "data" / "val").rglob("*.png"))
    for args in (("predict", str(run_dir), str(image)), ("evaluate", str(run_dir))):
        code, err = cli(capsys, *args)
        assert code == 2 and "not a valid safetensors file" in err, err
    assert not marker.exists()


def test_refusal_through_the_installed_tlzoo_command_shows_no_traceback(tmp_path):
    """The same refusal end to end: the real `tlzoo` executable, a fresh interpreter."""
    import subprocess
    import sys

    marker, (_, zipped) = evil_files(tmp_path / "evil")
    root = make_images(tmp_path / "data", train=2, val=1)
    spec = write_spec(tmp_path, root, backbone={"name": "efficientnet_lite0", "weights": {"path": str(zipped)}})
    result = subprocess.run([str(Path(sys.executable).parent / "tlzoo"), "run", str(spec)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "refused to load" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not marker.exists()


# ---- malformed safetensors -----------------------------------------------------------------

def tiny_state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in build_tiny(None).model.state_dict().items()}


def test_bad_header_length_is_a_clean_error(tmp_path):
    from safetensors.torch import save

    blob = save({"w": torch.ones(4)})
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 10**9) + blob[8:])
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        load_state_file(path)
    path.write_bytes(blob[:20])  # truncated
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        load_state_file(path)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.__setitem__("stem.0.weight", torch.zeros(6, 3, 5, 5)), r"shape \(6, 3, 5, 5\)"),
    (lambda s: s.__setitem__("stem.0.weight", torch.zeros(6, 3, 3, 3, dtype=torch.int32)), "dtype torch.int32"),
])
def test_shape_or_dtype_mismatch_is_a_clean_error(tmp_path, capsys, change, message):
    from safetensors.torch import save_file

    state = tiny_state()
    change(state)
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError, match=message):
        build_model(tiny_component(), WeightsFile(path=str(path)), HeadSpec(), 3)
    root = make_images(tmp_path / "data", train=2, val=1)
    code, err = cli(capsys, "run", str(write_spec(tmp_path, root, backbone={"name": TINY,
                                                                          "weights": {"path": str(path)}})))
    assert code == 2 and "stem.0.weight" in err, err


def test_half_precision_weights_still_load(tmp_path):
    from safetensors.torch import save_file

    state = {k: (v.half() if v.is_floating_point() else v) for k, v in tiny_state().items()}
    save_file(state, str(tmp_path / "half.safetensors"))
    built = build_model(tiny_component(), WeightsFile(path=str(tmp_path / "half.safetensors")), HeadSpec(), 3)
    assert built.model.stages[0][0].weight.dtype == torch.float32


# ---- the source keeps it that way ------------------------------------------------------------

SCANNED = ("core", "plugins", "registry", "benchmarks", "examples")
PICKLE_LOADERS = {"load", "loads", "Unpickler"}
PICKLE_MODULES = ("pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle")


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """Every torch.load without weights_only=True, and every pickle.load/loads/Unpickler."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ImportFrom) and node.module:  # `from torch import load` hides the call
            names = {alias.name for alias in node.names}
            if (node.module.split(".")[0] == "torch" and "load" in names) or (
                    node.module in PICKLE_MODULES and names & PICKLE_LOADERS):
                found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        owner = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
        where = f"{filename}:{node.lineno}"
        if name == "load" and owner.split(".")[-1] in ("torch", "serialization"):
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            if not safe:
                found.append(f"{where}: {ast.unparse(node)}")
        if name in PICKLE_LOADERS and owner.split(".")[-1] in PICKLE_MODULES:
            found.append(f"{where}: {ast.unparse(node)}")
    return found


def test_scanner_catches_what_it_must():
    bad = ("import torch, pickle\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
           "torch.serialization.load(p)\npickle.loads(b)\npickle.Unpickler(f).load()\n"
           "from torch import load\nfrom pickle import loads as l\n")
    assert len(unsafe_loads(bad)) == 7
    assert unsafe_loads("import torch\ntorch.load(p, map_location='cpu', weights_only=True)\n") == []


def test_no_unsafe_load_anywhere_in_the_source():
    files = [path for folder in SCANNED for path in sorted((REPO / folder).rglob("*.py"))
             if ".venv" not in path.parts]
    assert any(path.name == "weights.py" for path in files)  # the scan sees the real loader
    found = [hit for path in files for hit in unsafe_loads(path.read_text(encoding="utf-8"), str(path))]
    assert found == [], "unsafe loads:\n" + "\n".join(found)
    # and the loader itself really calls torch.load with weights_only=True
    assert "weights_only=True" in (REPO / "core" / "model" / "weights.py").read_text()
