"""Run loggers: the register_loggers hook, the metrics and TensorBoard loggers, a third-party one."""

from __future__ import annotations

import csv
import io
import json

import pytest

from support import make_image_folder, write_spec
from tlzoo.engine.run import run_spec
from tlzoo.errors import SpecError, TlzooError
from tlzoo.registry import Component, get_registry
from tlzoo.spec import load_spec


def run_tiny(tmp_path, **overrides):
    root = make_image_folder(tmp_path / "data", classes=3, per_class=4, val_per_class=2, size=16)
    spec = write_spec(tmp_path, root, report={"enabled": False}, **overrides)
    return run_spec(load_spec(spec, get_registry()), tmp_path / "run", stream=io.StringIO())


def test_tensorboard_event_files_load_with_tensorboards_own_reader(tmp_path, tiny_backbone, one_thread):
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator

    result = run_tiny(tmp_path, loggers=["tensorboard"], train__epochs=3)
    events = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={SCALARS: 0, IMAGES: 0})
    events.Reload()
    tags = events.Tags()
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("accuracy/val_top1", "val_top1")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2, 3]
        assert [s.value for s in scalars] == pytest.approx([m[key] for m in metrics], rel=1e-6)
    assert {"lr/group_0", "lr/group_3", "model/trainable_params"} <= set(tags["scalars"])
    (image,) = events.Images("confusion_matrix/best")
    assert image.step == result.summary["best_epoch"] and image.width > 100 and image.height > 100


def test_metrics_logger_is_always_on_and_its_csv_matches_the_jsonl(tmp_path, tiny_backbone, one_thread):
    spec = load_spec(write_spec(tmp_path, tmp_path, loggers=["tensorboard"]), get_registry())
    assert [ref.name for ref in spec.loggers] == ["tensorboard", "metrics"]
    result = run_tiny(tmp_path, loggers=[], train__epochs=2)
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    with open(result.run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [1, 2] and len(lines) == 2
    for row, line in zip(rows, lines):
        assert float(row["val_loss"]) == pytest.approx(line["val_loss"])
        assert [float(row[f"lr_{g}"]) for g in range(len(line["lr"]))] == pytest.approx(line["lr"])


def test_the_example_plugins_logger_receives_every_epoch(tmp_path, tiny_backbone, one_thread):
    if "example/epoch_log" not in get_registry().catalog("loggers"):
        pytest.fail("examples/tlzoo-plugin-example is not installed (make test installs it)")
    result = run_tiny(tmp_path, loggers=[{"name": "example/epoch_log", "options": {"file": "events.jsonl"}}],
                      train__epochs=3)
    events = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "epoch", "end"]
    assert events[0]["classes"] == ["class0", "class1", "class2"]
    assert [e["epoch"] for e in events[1:4]] == [1, 2, 3]
    assert events[-1] == {"event": "end", "best_epoch": result.summary["best_epoch"],
                          "best_path": str(result.run_dir / "best.safetensors")}


def test_unknown_logger_and_bad_options_are_located(tmp_path):
    spec = write_spec(tmp_path, tmp_path, loggers=["tensorbord", {"name": "tensorboard", "options": {"dri": "x"}}])
    with pytest.raises(SpecError) as caught:
        load_spec(spec, get_registry())
    text = str(caught.value)
    assert "loggers.0.name" in text and "Did you mean: tensorboard?" in text and "tlzoo list loggers" in text
    assert "loggers.1.options.dri" in text  # the user's own indices: the metrics logger is added after them


def test_an_unknown_logger_is_reported_with_the_specs_other_problems(tmp_path):
    spec = write_spec(tmp_path, tmp_path, loggers=["tensorbord"], train__epochs=0)
    with pytest.raises(SpecError) as caught:
        load_spec(spec, get_registry())
    text = str(caught.value)
    assert "train.epochs" in text and "loggers.0.name" in text and "Did you mean: tensorboard?" in text


class Exploding:
    def __init__(self, options, run_dir):
        pass

    def start(self, spec, classes):
        pass

    def epoch(self, metrics):
        raise RuntimeError("disk full")

    def end(self, summary, best_path):
        pass


def test_a_failing_logger_is_named_with_its_plugin(tmp_path, tiny_backbone, one_thread):
    get_registry().catalog("loggers").add(Component("test/exploding", "raises", Exploding, plugin="tests"))
    with pytest.raises(TlzooError, match=r"logger 'test/exploding' \(plugin 'tests'\) failed in epoch\(\): "
                                         r"RuntimeError: disk full"):
        run_tiny(tmp_path, loggers=["test/exploding"], train__epochs=1)


def test_a_logger_that_lacks_a_method_is_refused(tmp_path, tiny_backbone, one_thread):
    get_registry().catalog("loggers").add(Component("test/half", "no end()", lambda options, run_dir: object(),
                                                    plugin="tests"))
    with pytest.raises(TlzooError, match="lacks start"):
        run_tiny(tmp_path, loggers=["test/half"], train__epochs=1)


def test_a_run_failing_before_training_leaves_no_tensorboard_folder(tmp_path, tiny_backbone, one_thread):
    from tlzoo.plugins.loggers.tensorboard import TensorBoardLogger, TensorBoardOptions

    logger = TensorBoardLogger(TensorBoardOptions(), tmp_path / "run")
    logger.start({}, ["a", "b"])
    assert not (tmp_path / "run" / "tensorboard").exists()
    logger.epoch({"epoch": 1, "train_loss": 0.5})
    logger.end({"confusion_matrix": [[1, 0], [0, 1]], "classes": ["a", "b"], "best_epoch": 1}, None)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
