"""Run specs: components by name, options validated by their own plugin, all errors at once."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from conftest import run_cli

BASE = {
    "backbone": "efficientnet_lite0",
    "data": {"reader": {"name": "imagefolder", "options": {"root": "data"}}},
    "train": {"epochs": 2, "strategy": "head_only"},
}


def with_changes(*changes) -> dict:
    spec = copy.deepcopy(BASE)
    for path, value in changes:
        target = spec
        keys = path.split(".")
        for key in keys[:-1]:
            if isinstance(target.get(key), str):
                target[key] = {"name": target[key]}
            target = target.setdefault(key, {})
        if value is DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return spec


DELETE = object()

# lists/bad.txt: three bad label lines and one good one (make_spec_folder writes the lists)
TXT_LISTS = {"name": "txt_list", "options": {"train": "lists/bad.txt", "val": "lists/val.txt"}}

BIG_INT = "9" * 5000

# (id, spec or raw text/bytes, extra CLI args, substrings every one of which the error must contain).
# Each case runs in a folder holding data/train/a/x.png, data/val/a/y.png and a file named `taken`.
BAD_SPECS = [
    ("unknown-top-level-key", with_changes(("trian", {"epochs": 1})), [],
     ["trian: Extra inputs are not permitted. Did you mean: train?"]),
    ("unknown-nested-key", with_changes(("train.epoch", 3)), [],
     ["train.epoch: Extra inputs are not permitted. Did you mean: epochs?"]),
    ("misspelt-backbone", with_changes(("backbone", "efficientnet_lite")), [],
     ["backbone.name: Unknown backbone 'efficientnet_lite'. Did you mean:", "efficientnet_lite0",
      "Run 'tlzoo list backbones'"]),
    ("misspelt-reader", with_changes(("data.reader.name", "imagefolde")), [],
     ["data.reader.name: Unknown dataset reader 'imagefolde'. Did you mean: imagefolder?"]),
    ("misspelt-strategy", with_changes(("train.strategy", "head_onyl")), [],
     ["train.strategy.name: Unknown freeze strategy 'head_onyl'. Did you mean: head_only?"]),
    ("wrong-type", with_changes(("train.epochs", "ten")), [], ["train.epochs: Input should be a valid integer"]),
    ("lr-zero", with_changes(("train.optimizer", {"lr": 0})), [],
     ["train.optimizer.lr: Input should be greater than 0"]),
    ("lr-negative", with_changes(("train.optimizer", {"lr": -0.1})), [],
     ["train.optimizer.lr: Input should be greater than 0"]),
    ("epochs-zero", with_changes(("train.epochs", 0)), [], ["train.epochs: Input should be greater than 0"]),
    ("missing-data", with_changes(("data", DELETE)), [], ["data: Field required"]),
    ("missing-data-root", with_changes(("data.reader.options", {})), [],
     ["data.reader.options.root: Field required"]),
    ("json-syntax", '{\n  "backbone": "efficientnet_lite0",\n  "data": {,}\n}\n', [],
     ["invalid JSON at line 3, column"]),
    ("spec-not-an-object", "[1, 2]", [], ["the spec must be a JSON object"]),
    ("set-without-equals", BASE, ["--set", "train.epochs"], ["--set 'train.epochs': write KEY=VALUE"]),
    ("set-bad-value", BASE, ["--set", "train.epochs=-1"],
     ["--set train.epochs=-1: train.epochs: Input should be greater than 0"]),
    ("set-into-scalar", BASE, ["--set", "train.epochs.x=1"], ["cannot go inside 'epochs'"]),
    ("backbone-option-typo", with_changes(("backbone.options", {"drop_rat": 0.1})), [],
     ["backbone.options.drop_rat: Extra inputs are not permitted. Did you mean: drop_rate?"]),
    ("strategy-option-type", with_changes(("train.strategy", {"name": "freeze_unfreeze",
                                                               "options": {"frozen_epochs": "x"}})), [],
     ["train.strategy.options.frozen_epochs: Input should be a valid integer"]),
    ("optimizer-enum", with_changes(("train.optimizer", {"name": "adamm"})), [],
     ["train.optimizer.name: Input should be 'sgd', 'adam' or 'adamw'"]),
    ("dropout-range", with_changes(("head", {"dropout": 1.5})), [], ["head.dropout: Input should be less than 1"]),
    ("augment-unknown-op", with_changes(("data.augment", [{"op": "random_rotaton", "degrees": 4}])), [],
     ["data.augment[0]", "random_rotation"]),
    ("all-errors-at-once", with_changes(("train.epochs", 0), ("train.optimizer", {"lr": -1}),
                                        ("backbone", "efficientnet_lite"), ("data.reader.options.root", "nowhere"),
                                        ("train.device", "tpu")), [],
     ["5 problem(s)", "train.epochs:", "train.optimizer.lr:", "backbone.name: Unknown backbone",
      "data.reader.options.root: folder", "train.device:"]),
    # what `run` refuses before training, which validate must report too (issue 10.7)
    ("data-root-does-not-exist", with_changes(("data.reader.options.root", "nowhere")), [],
     ["data.reader.options.root: folder", "nowhere does not exist"]),
    ("txt-lists-do-not-exist", with_changes(("data.reader", {"name": "txt_list", "options": {
        "train": "train.txt", "val": "val.txt"}})), [], ["data.reader.options.train: file", "train.txt does not exist"]),
    ("weights-misspelt", with_changes(("backbone", {"name": "efficientnet_lite0", "weights": "pretrianed"})), [],
     ["backbone.weights: backbone efficientnet_lite0 has no weights named 'pretrianed'. Did you mean: pretrained?"]),
    ("weights-unknown-variant", with_changes(("backbone", {"name": "efficientnet_lite0",
                                                           "weights": "IMAGENET1K_V9"})), [],
     ["backbone.weights: backbone efficientnet_lite0 has no weights named 'IMAGENET1K_V9'", "HINT: use 'pretrained'"]),
    ("weights-file-missing", with_changes(("backbone", {"name": "efficientnet_lite0",
                                                        "weights": {"path": "nope.safetensors"}})), [],
     ["backbone.weights.path: weights file", "nope.safetensors does not exist"]),
    # bounds on values that validated and then crashed or exhausted memory in `run` (issue 11.2, 11.5)
    ("epochs-a-billion", with_changes(("train.epochs", 10**9)), [],
     ["train.epochs: Input should be less than or equal to 10000"]),
    ("epochs-true", with_changes(("train.epochs", True)), [], ["train.epochs: Input should be a valid integer"]),
    ("seed-2-to-the-64", with_changes(("train.seed", 2**64)), [],
     ["train.seed: Input should be less than or equal to 4294967295"]),
    ("workers-negative", with_changes(("data.num_workers", -1)), [],
     ["data.num_workers: -1 is not a worker count: use 'auto' or an integer 0..256"]),
    ("lr-1e300", with_changes(("train.optimizer", {"lr": 1e300})), [],
     ["train.optimizer.lr: Input should be less than or equal to 100"]),
    ("lr-infinity", '{"data": {"reader": {"name": "imagefolder", "options": {"root": "data"}}}, '
                    '"train": {"optimizer": {"lr": Infinity}}}', [],
     ["train.optimizer.lr: Input should be a finite number"]),
    ("warmup-1e308", with_changes(("train.scheduler", {"name": "cosine", "warmup_epochs": 1e308})), [],
     ["train.scheduler.warmup_epochs: Input should be less than or equal to 10000"]),
    ("hidden-a-billion", with_changes(("head", {"hidden": 10**9})), [],
     ["head.hidden: Input should be less than or equal to 65536"]),
    ("name-with-slash", with_changes(("name", "a/b")), [], ["name: 'a/b' is not one folder name"]),
    ("name-escapes-output", with_changes(("name", "../../escape")), [],
     ["name: '../../escape' is not one folder name", "must stay inside `output`"]),
    ("name-absolute", with_changes(("name", "/abs")), [], ["name: '/abs' is not one folder name"]),
    ("name-with-nul", with_changes(("name", "a\x00b")), [], ["name: a run name cannot contain control characters"]),
    ("name-5000-characters", with_changes(("name", "x" * 5000)), [],
     ["name: a run name has 1 to 100 characters (this one has 5000)"]),
    ("output-is-a-file", with_changes(("output", "taken")), [], ["output: ", "taken is a file, not a folder"]),
    ("output-under-a-file", with_changes(("output", "taken/runs")), [], ["output: ", "taken is a file, not a folder"]),
    ("output-with-nul", with_changes(("output", "runs\x00x")), [], ["output: a path cannot contain a NUL character"]),
    ("device-tpu", with_changes(("train.device", "tpu")), [],
     ["train.device: 'tpu' is not a device tlzoo runs on: use 'auto', 'cpu', 'cuda' or 'cuda:N'"]),
    # spec files that are not UTF-8 JSON of sane size and depth (issue 11.4)
    ("latin-1", '{"name": "caf\xe9"}'.encode("latin-1"), [], ["is not UTF-8 text: byte 0xe9 at line 1",
                                                             "HINT: save it as UTF-8"]),
    ("utf-16", json.dumps(BASE).encode("utf-16"), [], ["is UTF-16 text", "save it as UTF-8"]),
    ("random-bytes", bytes(range(256)) * 4, [], ["is not UTF-8 text: byte 0x80"]),
    ("nested-100000-deep", "[" * 100_000, [], ["its JSON is nested too deeply"]),
    ("5000-digit-integer", '{"train": {"seed": ' + BIG_INT + "}}", [], ["invalid JSON: Exceeds the limit"]),
    ("larger-than-1-MiB", b" " * (1024 * 1024) + b"{}", [], ["is larger than 1024 KiB"]),
    # what `run` refused at once while validate said ok (issue 20, items 11, 13, 17)
    ("txt-labels-bad-with-bad-files-error", with_changes(("data.reader", TXT_LISTS), ("data.bad_files", "error")), [],
     ["data: 3 bad input(s) found before training", "bad.txt:1: label -1 is negative",
      "bad.txt:2: label '1.5' is not an integer class index", "bad.txt:3: expected 'PATH LABEL'"]),
    ("txt-labels-bad-over-the-limits", with_changes(("data.reader", TXT_LISTS), ("data.tolerated_bad_files", 0)), [],
     ["data: 3 of 5 inputs (60.0%) are bad, more than data.max_bad_fraction", "bad.txt:1: label -1 is negative"]),
    ("txt-labels-are-class-names", with_changes(("data.reader", {"name": "txt_list", "options": {
        "train": "lists/names.txt", "val": "lists/names-val.txt"}})), [],
     ["names.txt: no label is an integer class index (labels such as 'daisy', 'rose')",
      "set data.reader.options.labels to 'names'"]),
    ("weights-file-does-not-fit", with_changes(("backbone", {"name": "efficientnet_lite0",
                                                             "weights": {"path": "misfit.safetensors"}})), [],
     ["backbone.weights.path: weights file", "misfit.safetensors: tensor 'conv_stem.weight' has shape (5, 5)"]),
    ("augment-preset-behind-another-error", with_changes(("train.epochs", 0), ("data.augment", "lite")), [],
     ["train.epochs: Input should be greater than 0", "data.augment: unknown augmentation preset 'lite'"]),
    ("imagefolder-one-folder-without-val-split", with_changes(("data.reader.options.root", "data/train")), [],
     ["data.reader.options.train: folder", "itself holds folders (a)", "set data.reader.options.val_split (e.g. 0.2)"]),
    ("imagefolder-train-dot-without-val-split", with_changes(("data.reader.options", {"root": "data/train",
                                                                                        "train": "."})), [],
     ["data.reader.options.val: folder", "or set data.reader.options.val_split (e.g. 0.2)"]),
]


# these few also go through the installed `tlzoo` script in a fresh interpreter
THROUGH_THE_SCRIPT = {"json-syntax", "set-without-equals", "all-errors-at-once"}


def validate_in_process(capsys, *args: str) -> tuple[int, str]:
    """`tlzoo validate ARGS` through the CLI's own main(); any uncaught exception fails the test."""
    from tlzoo.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["validate", *args])
    return exit_info.value.code, capsys.readouterr().err


def make_spec_folder(folder: Path) -> None:
    """What BASE's paths name: a one-class ImageFolder (validate lists files, never decodes them), txt lists
    of it, and a weights file that does not fit efficientnet_lite0."""
    import torch
    from safetensors.torch import save_file

    for split, image in (("train", "x.png"), ("val", "y.png")):
        (folder / "data" / split / "a").mkdir(parents=True)
        (folder / "data" / split / "a" / image).write_bytes(b"not decoded by validate")
    (folder / "taken").write_text("a file where a folder is expected\n")
    lists = folder / "lists"
    lists.mkdir()
    x, y = "../data/train/a/x.png", "../data/val/a/y.png"
    (lists / "bad.txt").write_text(f"{x} -1\n{x} 1.5\n{x}\n{x} 0\n")
    (lists / "val.txt").write_text(f"{y} 0\n")
    (lists / "names.txt").write_text(f"{x} daisy\n../data/train/a/z.png rose\n")
    (lists / "names-val.txt").write_text(f"{y} daisy\n")
    save_file({"conv_stem.weight": torch.zeros(5, 5)}, str(folder / "misfit.safetensors"))


@pytest.mark.parametrize("case", BAD_SPECS, ids=[case[0] for case in BAD_SPECS])
def test_bad_spec_exits_2_with_every_problem_located(tmp_path, capsys, case):
    name, spec, args, expected = case
    make_spec_folder(tmp_path)
    path = tmp_path / "spec.json"
    if isinstance(spec, bytes):
        path.write_bytes(spec)
    else:
        path.write_text(spec if isinstance(spec, str) else json.dumps(spec, indent=2))
    if name in THROUGH_THE_SCRIPT:
        result = run_cli("validate", str(path), *args, env={"TLZOO_LOAD_PLUGINS": ""})
        code, stderr = result.returncode, result.stderr
    else:
        code, stderr = validate_in_process(capsys, str(path), *args)
    assert code == 2, stderr
    assert "Traceback" not in stderr
    for text in expected:
        assert text in stderr, f"{text!r} not in:\n{stderr}"


def test_a_device_that_is_no_regular_file_is_refused_without_reading_it(capsys):
    code, stderr = validate_in_process(capsys, "/dev/zero")
    assert code == 2 and "spec file /dev/zero is not a regular file" in stderr


def test_a_100_kb_backbone_name_is_answered_at_once_and_shown_cut(tmp_path, capsys):
    import time

    make_spec_folder(tmp_path)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(with_changes(("backbone", "resnet" * 20_000))))
    start = time.perf_counter()
    code, stderr = validate_in_process(capsys, str(path))
    assert code == 2 and "backbone.name: Unknown backbone 'resnetresnet" in stderr
    assert "(120000 characters)" in stderr and len(stderr) < 2000
    assert time.perf_counter() - start < 10  # was 44 s: did-you-mean over every name


def test_thousands_of_problems_are_listed_up_to_a_cap_with_a_count_of_the_rest(tmp_path, capsys):
    make_spec_folder(tmp_path)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(with_changes(("data.augment", [{"op": "nope"}] * 3000))))
    code, stderr = validate_in_process(capsys, str(path))
    assert code == 2
    lines = stderr.splitlines()
    assert lines[0].startswith("tlzoo: error: 3000 problem(s)")
    assert len(lines) < 60 * 2 and "... and 2950 more problem(s) not shown" in stderr


def test_missing_spec_file(tmp_path):
    result = run_cli("validate", str(tmp_path / "nope.json"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_valid_spec_validates(tmp_path):
    make_spec_folder(tmp_path)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(BASE))
    result = run_cli("validate", str(path), "--set", "train.epochs=5")
    assert result.returncode == 0, result.stderr
    assert "ok (backbone efficientnet_lite0, reader imagefolder, strategy head_only)" in result.stdout


def test_bare_string_is_shorthand_and_options_are_validated_by_the_component(tmp_path):
    from tlzoo.spec import resolve_spec
    from tlzoo.registry import get_registry

    spec = with_changes(("backbone.options", {"drop_rate": 0.2}),
                        ("train.strategy", {"name": "freeze_unfreeze", "options": {"frozen_epochs": 3}}))
    resolved = resolve_spec(spec, get_registry(), tmp_path)
    assert resolved.backbone.options.drop_rate == 0.2
    assert resolved.strategy.options.frozen_epochs == 3
    assert resolved.spec.train.strategy.name == "freeze_unfreeze"
    assert resolved.path("data") == tmp_path / "data"


def test_overrides_reach_into_shorthand_components():
    from tlzoo.spec import apply_overrides

    raw = apply_overrides(copy.deepcopy(BASE), ["train.strategy.options.frozen_epochs=2", "data.batch_size=8",
                                                 "name=\"x\""], "spec")
    assert raw["train"]["strategy"] == {"name": "head_only", "options": {"frozen_epochs": 2}}
    assert raw["data"]["batch_size"] == 8 and raw["name"] == "x"


def test_schema_includes_every_installed_plugins_options():
    result = run_cli("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    text = json.dumps(schema)
    assert "frozen_epochs" in text  # freeze_unfreeze's own options
    assert "drop_path_rate" in text  # efficientnet_lite0's own options
    backbone_names = {n for branch in schema["properties"]["backbone"]["allOf"][1]["anyOf"]
                      for n in branch["then"]["properties"]["name"]["enum"]}
    assert "efficientnet_lite0" in backbone_names


def test_every_component_field_takes_a_bare_name(tmp_path):
    from tlzoo.registry import get_registry
    from tlzoo.spec import apply_overrides, resolve_spec

    spec = with_changes(("train.scheduler", "step"), ("train.optimizer", "sgd"))
    resolved = resolve_spec(spec, get_registry(), tmp_path)
    assert resolved.spec.train.scheduler.name == "step" and resolved.spec.train.optimizer.name == "sgd"
    raw = apply_overrides(copy.deepcopy(spec), ["train.scheduler.step_size=2", "train.optimizer.lr=0.1"], "spec")
    resolved = resolve_spec(raw, get_registry(), tmp_path)
    assert resolved.spec.train.scheduler.step_size == 2 and resolved.spec.train.optimizer.lr == 0.1


def test_unknown_list_command_is_a_tlzoo_error(capsys):
    from tlzoo.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["list", "foo"])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and "tlzoo: error: No such command 'foo'." in stderr


def test_a_closed_pipe_ends_quietly_with_exit_0():
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left before tlzoo wrote a line, as `| head` does when done
    try:
        result = subprocess.run([str(Path(sys.executable).parent / "tlzoo"), "list", "strategies"],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_schema_says_optimizer_and_scheduler_take_a_bare_name():
    from tlzoo.cli.schema import spec_schema
    from tlzoo.registry import get_registry

    train = spec_schema(get_registry())["$defs"]["TrainSpec"]["properties"]
    assert {"enum": ["none", "step", "cosine", "onecycle"]} in train["scheduler"]["anyOf"]
    assert {"enum": ["sgd", "adam", "adamw"]} in train["optimizer"]["anyOf"]
