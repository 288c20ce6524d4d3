"""The run directory's own record: spec.json validates and runs again; a failed start leaves nothing behind."""

from __future__ import annotations

import json
import os

import pytest

from tlzoo.engine import run as engine_run
from tlzoo.engine.run import run_spec
from tlzoo.registry import get_registry
from tlzoo.rundir.outputs import resolved_spec_json
from tlzoo.spec import load_spec, resolve_spec

from reliability_support import cli, make_images, register_tiny, write_spec

pytestmark = pytest.mark.usefixtures("one_thread")

READER_OPTIONS = [
    ("imagefolder", {"root": "data"}),
    ("imagefolder", {"root": "data", "train": "train", "val": "val"}),
    ("imagefolder", {"root": "data", "val_split": 0.25}),
    ("imagefolder", {"root": "data", "train": "train", "val_split": 0.3, "seed": 4}),
    ("txt_list", {"train": "train.txt", "val": "val.txt"}),
    ("txt_list", {"train": "train.txt", "val": "val.txt", "classes": "classes.txt", "root": "data"}),
    ("csv", {"train": "train.csv", "val": "val.csv"}),
    ("csv", {"train": "train.csv", "val": "val.csv", "labels": "indices", "delimiter": ";", "root": "data"}),
]


@pytest.mark.parametrize("reader, options", READER_OPTIONS)
def test_saved_spec_validates_again_unchanged(tmp_path, reader, options):
    register_tiny()
    raw = {"backbone": {"name": "test/reliability_cnn"}, "data": {"reader": {"name": reader, "options": options}},
           "output": "runs"}
    saved = resolved_spec_json(resolve_spec(raw, get_registry(), tmp_path))
    again = resolve_spec(json.loads(json.dumps(saved)), get_registry(), tmp_path / "elsewhere")
    assert resolved_spec_json(again) == saved
    assert again.base_dir == tmp_path  # relative paths still start from the original spec's folder


def test_val_split_run_evaluates_and_its_spec_json_runs_again_from_anywhere(tmp_path, capsys, monkeypatch):
    register_tiny()
    project = tmp_path / "project"
    make_images(project / "data")
    spec = write_spec(project, project / "data", data={
        "reader": {"name": "imagefolder", "options": {"root": "data/train", "train": ".", "val_split": 0.25}}},
        train={"epochs": 1}, output="runs")
    spec.write_text(spec.read_text().replace(str(project / "data"), "data"))
    code, err = cli(capsys, "run", str(spec))
    assert code == 0, err
    run_dir = project / "runs" / "tiny"
    code, err = cli(capsys, "evaluate", str(run_dir))
    assert code == 0, err
    monkeypatch.chdir(tmp_path)  # another working folder: the saved spec must not depend on it
    code, err = cli(capsys, "run", str(run_dir / "spec.json"), "--output", str(tmp_path / "again"))
    assert code == 0, err
    assert (tmp_path / "again" / "best.safetensors").is_file()


def test_a_run_failing_before_its_first_checkpoint_leaves_no_run_directory(tmp_path, monkeypatch, capsys):
    register_tiny()
    spec = write_spec(tmp_path, make_images(tmp_path / "data"), train={"epochs": 1})

    def diverges(self):
        raise FloatingPointError("the loss is NaN at epoch 1, step 1")

    monkeypatch.setattr(engine_run.Trainer, "fit", diverges)
    with pytest.raises(FloatingPointError):
        run_spec(load_spec(spec, get_registry()))
    assert not (tmp_path / "runs" / "tiny").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(FloatingPointError):
        run_spec(load_spec(spec, get_registry()), kept)
    assert kept.is_dir() and os.listdir(kept) == []  # an empty --output folder the user made: emptied, kept


def test_a_run_directory_that_cannot_be_made_is_an_error_naming_the_option(tmp_path):
    from pathlib import Path

    from tlzoo.errors import TlzooError
    from tlzoo.rundir.outputs import claim_run_dir, new_run_dir

    (tmp_path / "taken").write_text("a file")
    with pytest.raises(TlzooError, match=r"run directory .*taken/run \(--output\): Not a directory") as caught:
        claim_run_dir(tmp_path / "taken" / "run")  # a file where a folder must go
    assert caught.value.hint == "set --output to a folder you can write"
    with pytest.raises(TlzooError, match="a file of that name is in the way"):
        new_run_dir(tmp_path / "taken", "run")
    if Path("/proc/self").is_dir():  # no folder can be made in /proc, whoever runs this
        with pytest.raises(TlzooError, match=r"/proc/tlzoo-runs \(the spec's `output`\)"):
            new_run_dir(Path("/proc/tlzoo-runs"), "run")
    assert claim_run_dir(tmp_path / "new" / "run").is_dir()  # the usual case still makes its parents


def test_an_output_holding_a_stopped_run_says_how_to_finish_it(tmp_path):
    from tlzoo.auto.train import check_output
    from tlzoo.errors import TlzooError
    from tlzoo.rundir.outputs import claim_run_dir

    stopped = tmp_path / "stopped"  # what a killed run leaves: its spec and last checkpoint, no summary
    stopped.mkdir()
    for name in ("spec.json", "last.json", "last.safetensors"):
        (stopped / name).write_text("{}")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    for claim in (claim_run_dir, check_output):  # tlzoo run --output, tlzoo train --output (before its search)
        with pytest.raises(TlzooError, match="holds a run that stopped before its end") as caught:
            claim(stopped)
        assert caught.value.hint.startswith(f"finish it with: tlzoo run --resume {stopped}")
        with pytest.raises(TlzooError, match="already holds files") as caught:
            claim(other)
        assert "resume" not in caught.value.hint
        (stopped / "summary.json").write_text("{}")  # finished: nothing to resume
        with pytest.raises(TlzooError, match="already holds files"):
            claim(stopped)
        (stopped / "summary.json").unlink()


def test_tlzoo_train_names_stopped_runs_of_its_name(tmp_path):
    from tlzoo.auto.train import note_stopped_runs

    for name, finished in (("photos", False), ("photos-2", True), ("photos-3", False), ("photos-old", False),
                           ("other", False)):
        (tmp_path / name).mkdir()
        for file in ("spec.json", "last.json") + (("summary.json",) if finished else ()):
            (tmp_path / name / file).write_text("{}")
    lines = []
    note_stopped_runs(tmp_path, "photos", lines.append)
    assert [line.split()[1] for line in lines] == [str(tmp_path / "photos"), str(tmp_path / "photos-3")]
    assert f"`tlzoo run --resume {tmp_path / 'photos'}` finishes it" in lines[0]
    note_stopped_runs(tmp_path / "missing", "photos", lines.append)  # no runs/ folder yet: nothing to say
    assert len(lines) == 2
