"""Run specs: components by name, options validated by their own plugin, all errors at once."""

from __future__ import annotations

import copy
import json

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

# (id, spec or raw text, extra CLI args, substrings every one of which the error must contain)
BAD_SPECS = [
    ("unknown-top-level-key", with_changes(("trian", {"epochs": 1})), [], ["trian: Extra inputs are not permitted"]),
    ("unknown-nested-key", with_changes(("train.epoch", 3)), [], ["train.epoch: Extra inputs are not permitted"]),
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
    ("set-bad-value", BASE, ["--set", "train.epochs=-1"], ["train.epochs: Input should be greater than 0"]),
    ("set-into-scalar", BASE, ["--set", "train.epochs.x=1"], ["cannot go inside 'epochs'"]),
    ("backbone-option-typo", with_changes(("backbone.options", {"drop_rat": 0.1})), [],
     ["backbone.options.drop_rat: Extra inputs are not permitted"]),
    ("strategy-option-type", with_changes(("train.strategy", {"name": "freeze_unfreeze",
                                                               "options": {"frozen_epochs": "x"}})), [],
     ["train.strategy.options.frozen_epochs: Input should be a valid integer"]),
    ("optimizer-enum", with_changes(("train.optimizer", {"name": "adamm"})), [],
     ["train.optimizer.name: Input should be 'sgd', 'adam' or 'adamw'"]),
    ("dropout-range", with_changes(("head", {"dropout": 1.5})), [], ["head.dropout: Input should be less than 1"]),
    ("augment-unknown-op", with_changes(("data.augment", [{"op": "random_rotaton", "degrees": 4}])), [],
     ["data.augment[0]", "random_rotation"]),
    ("all-errors-at-once", with_changes(("train.epochs", 0), ("train.optimizer", {"lr": -1}),
                                        ("backbone", "efficientnet_lite")), [],
     ["3 problem(s)", "train.epochs:", "train.optimizer.lr:", "backbone.name: Unknown backbone"]),
]


# these few also go through the installed `tlzoo` script in a fresh interpreter
THROUGH_THE_SCRIPT = {"json-syntax", "set-without-equals", "all-errors-at-once"}


def validate_in_process(capsys, *args: str) -> tuple[int, str]:
    """`tlzoo validate ARGS` through the CLI's own main(); any uncaught exception fails the test."""
    from tlzoo.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["validate", *args])
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case", BAD_SPECS, ids=[case[0] for case in BAD_SPECS])
def test_bad_spec_exits_2_with_every_problem_located(tmp_path, capsys, case):
    name, spec, args, expected = case
    path = tmp_path / "spec.json"
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


def test_missing_spec_file(tmp_path):
    result = run_cli("validate", str(tmp_path / "nope.json"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_valid_spec_validates(tmp_path):
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
