"""The HTML report: per-class metrics, per-image records, the page after a run, `tlzoo report`, 100 classes."""

from __future__ import annotations

import base64
import csv
import io
import json
import re

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reliability_support import cli
from support import make_image_folder, write_spec
from tlzoo.engine.per_image import records_from_logits
from tlzoo.engine.run import run_spec
from tlzoo.errors import TlzooError
from tlzoo.registry import get_registry
from tlzoo.report.figures import matrix_classes, unfreeze_epochs
from tlzoo.report.per_class import most_confused, per_class_metrics
from tlzoo.report.records import top_losses
from tlzoo.spec import load_spec

DATA_URI = re.compile(r'src="data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)"')


def decoded_images(html: str) -> list[Image.Image]:
    """Every embedded image, fully decoded (Pillow raises on a damaged one)."""
    images = []
    for _, payload in DATA_URI.findall(html):
        with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
            image.load()
            images.append(image.size)
    return images


def section(html: str, name: str) -> str:
    return html.split(f'<section id="{name}">', 1)[1].split("</section>", 1)[0]


def test_per_class_metrics_from_a_confusion_matrix():
    # rows true, columns predicted; class c has no images and is never predicted
    confusion = [[5, 1, 0], [2, 3, 0], [0, 0, 0]]
    metrics = per_class_metrics(["a", "b", "c"], confusion)
    assert metrics["a"]["precision"] == pytest.approx(5 / 7)
    assert metrics["a"]["recall"] == pytest.approx(5 / 6)
    assert metrics["a"]["f1"] == pytest.approx(2 * (5 / 7) * (5 / 6) / (5 / 7 + 5 / 6))
    assert metrics["b"] == {"precision": pytest.approx(3 / 4), "recall": pytest.approx(3 / 5),
                            "f1": pytest.approx(2 / 3), "support": 5}
    assert metrics["c"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert most_confused(["a", "b", "c"], confusion) == [("b", "a", 2), ("a", "b", 1)]


def test_a_class_never_right_has_f1_zero_not_none():
    metrics = per_class_metrics(["a", "b"], [[0, 4], [0, 4]])
    assert metrics["a"] == {"precision": None, "recall": 0.0, "f1": None, "support": 4}
    assert metrics["b"]["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    metrics = per_class_metrics(["a", "b"], [[0, 4], [2, 4]])
    assert metrics["a"]["precision"] == 0.0 and metrics["a"]["f1"] == 0.0


def test_records_hold_the_loss_and_probability_of_each_image():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.5], [1.0, 1.5, 0.0]])
    labels = torch.tensor([0, 2, 0])
    items = [("x/a.png", 0), ("x/b.png", 2), ("x/c.png", 0)]
    records = records_from_logits(items, logits, labels, ["cat", "dog", "fox"])
    assert [(r.true, r.predicted, r.correct) for r in records] == [
        ("cat", "cat", True), ("fox", "dog", False), ("cat", "dog", False)]
    expected = F.cross_entropy(logits, labels, reduction="none")
    assert [r.loss for r in records] == pytest.approx(expected.tolist())
    assert records[1].probability == pytest.approx(logits[1].softmax(0)[1].item())
    assert [r.path for r in top_losses(records, 2)] == ["x/b.png", "x/c.png"]


def test_records_refuse_a_pass_out_of_order():
    with pytest.raises(TlzooError, match="one result per image in order"):
        records_from_logits([("a", 0), ("b", 1)], torch.zeros(2, 2), torch.tensor([1, 0]), ["p", "q"])


def test_unfreeze_marks_and_matrix_selection():
    metrics = [{"epoch": 1, "trainable_groups": 1}, {"epoch": 2, "trainable_groups": 1},
               {"epoch": 3, "trainable_groups": 3}, {"epoch": 4, "trainable_groups": 4}]
    assert unfreeze_epochs(metrics) == [3, 4]
    import numpy as np

    confusion = np.eye(40, dtype=int) * 5
    confusion[7, 30] = 4  # the only errors: 7 taken for 30, 12 for 3
    confusion[12, 3] = 1
    chosen = matrix_classes(confusion, limit=4)
    assert chosen == [3, 7, 12, 30]


def run_tiny(tmp_path, classes: int = 3, **overrides):
    root = make_image_folder(tmp_path / "data", classes=classes, per_class=6, val_per_class=3, size=24)
    spec = write_spec(tmp_path, root, **{"report__enabled": True, **overrides})
    return run_spec(load_spec(spec, get_registry()), tmp_path / "run", stream=io.StringIO())


def test_a_run_writes_its_report_per_image_csv_and_per_class_summary(tmp_path, tiny_backbone, one_thread):
    result = run_tiny(tmp_path, report={"top_losses": 4})
    run_dir = result.run_dir
    html = (run_dir / "report.html").read_text()
    for name in ("glance", "curves", "confusion", "per-class", "trust", "top-losses", "skipped"):
        assert f'<section id="{name}">' in html
    assert "http://" not in html and "https://" not in html  # self-contained: nothing fetched
    images = decoded_images(html.replace(section(html, "data-findings"), ""))  # test_inspect.py covers that one
    # curves, two matrices, the reliability diagram, four thumbnails
    assert len(images) == 8
    assert len(DATA_URI.findall(section(html, "top-losses"))) == 4
    trust = section(html, "trust")
    assert len(DATA_URI.findall(trust)) == 1 and "ECE before" in trust
    unknown = result.summary["trust"]["unknown"]
    assert f"{unknown['val_kept']:.1%} of the {unknown['val_images']} validation images" in trust
    for figure in ("curves", "confusion", "confusion-normalised", "reliability"):
        with Image.open(run_dir / f"report-{figure}.png") as image:
            image.load()
    with open(run_dir / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and set(rows[0]) == {"path", "true", "predicted", "probability", "loss"}
    summary = json.loads((run_dir / "summary.json").read_text())
    # the records come from best.safetensors on the validation split: they reproduce the best epoch
    correct = sum(row["true"] == row["predicted"] for row in rows)
    assert correct / len(rows) == pytest.approx(summary["best"]["val_top1"])
    mean_loss = sum(float(row["loss"]) for row in rows) / len(rows)
    # at the run's fitted temperature: the calibrated NLL of the validation split
    assert mean_loss == pytest.approx(summary["trust"]["calibration"]["val"]["after"]["nll"], abs=1e-4)
    assert summary["per_class"] == per_class_metrics(summary["classes"], summary["confusion_matrix"])
    assert set(summary["per_class"]["class0"]) == {"precision", "recall", "f1", "support"}
    # the page's highest-loss caption is the CSV's highest loss
    worst = max(rows, key=lambda row: float(row["loss"]))
    assert f"loss {float(worst['loss']):.3f}" in section(html, "top-losses")


def test_a_run_reports_from_its_best_validation_without_another_pass(tmp_path, tiny_backbone, one_thread,
                                                                    monkeypatch, capsys):
    import tlzoo.engine.metrics as metrics

    passes = []
    real = metrics.logits_over
    monkeypatch.setattr(metrics, "logits_over", lambda *args, **kwargs: passes.append(1) or real(*args, **kwargs))
    run_dir = run_tiny(tmp_path, train__epochs=3).run_dir
    assert len(passes) == 3  # one validation per epoch; the report reused the best one's logits
    monkeypatch.setattr(metrics, "logits_over", real)
    # the same rows as a pass over the reloaded best model
    out = tmp_path / "reloaded.csv"
    code, err = cli(capsys, "evaluate", str(run_dir), "--per-image", str(out))
    assert code == 0, err
    with open(run_dir / "per_image.csv", newline="") as ours, open(out, newline="") as reloaded:
        for row, again in zip(csv.DictReader(ours), csv.DictReader(reloaded), strict=True):
            assert (row["path"], row["true"], row["predicted"]) == (again["path"], again["true"], again["predicted"])
            assert float(row["loss"]) == pytest.approx(float(again["loss"]), abs=1e-4)


def test_the_report_can_be_switched_off(tmp_path, tiny_backbone, one_thread):
    result = run_tiny(tmp_path, report={"enabled": False})
    assert not (result.run_dir / "report.html").exists()
    assert not (result.run_dir / "per_image.csv").exists()
    assert (result.run_dir / "metrics.jsonl").exists()


def test_skipped_files_are_listed_with_their_reasons(tmp_path, tiny_backbone, one_thread):
    root = make_image_folder(tmp_path / "data", classes=3, per_class=4, val_per_class=2, size=16)
    (root / "train" / "class1" / "broken.png").write_bytes(b"not a png")
    spec = write_spec(tmp_path, root, train__epochs=1, data__max_bad_fraction=0.2, report__enabled=True)
    result = run_spec(load_spec(spec, get_registry()), tmp_path / "run", stream=io.StringIO())
    skipped = section((result.run_dir / "report.html").read_text(), "skipped")
    assert "broken.png" in skipped and "<td>" in skipped


def test_evaluate_writes_one_csv_row_per_image(tmp_path, tiny_backbone, one_thread, capsys):
    run_dir = run_tiny(tmp_path, report={"enabled": False}).run_dir
    out = tmp_path / "rows.csv"
    code, err = cli(capsys, "evaluate", str(run_dir), "--per-image", str(out))
    assert code == 0, err
    assert f"9 per-image rows written to {out}" in err
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9
    assert all(0 < float(row["probability"]) <= 1 and float(row["loss"]) >= 0 for row in rows)
    assert {row["true"] for row in rows} == {"class0", "class1", "class2"}


def test_evaluate_json_has_precision_recall_f1(tmp_path, tiny_backbone, one_thread, capsys):
    from tlzoo.cli.main import main

    run_dir = run_tiny(tmp_path, report={"enabled": False}).run_dir
    capsys.readouterr()
    main(["evaluate", str(run_dir), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["per_class"] == per_class_metrics(list(report["per_class_accuracy"]), report["confusion_matrix"])
    for name, accuracy in report["per_class_accuracy"].items():
        recall = report["per_class"][name]["recall"]
        assert recall == accuracy or (recall is None and accuracy is None)


def test_tlzoo_report_command_writes_the_page_where_asked(tmp_path, tiny_backbone, one_thread, capsys):
    from tlzoo.cli.main import main

    run_dir = run_tiny(tmp_path, report={"enabled": False}).run_dir
    out = tmp_path / "pages" / "tiny.html"
    capsys.readouterr()
    main(["report", str(run_dir), "--out", str(out), "--top-losses", "5"])
    assert capsys.readouterr().out.strip() == str(out)
    html = out.read_text()
    assert len(DATA_URI.findall(section(html, "top-losses"))) == 5
    assert "the run&#39;s validation split (best model)" in section(html, "glance")
    assert (tmp_path / "pages" / "tiny-curves.png").is_file()
    code, err = cli(capsys, "report", str(tmp_path / "nothing"))
    assert code == 2 and "does not exist" in err


def test_tlzoo_report_on_other_data(tmp_path, tiny_backbone, one_thread, capsys):
    from tlzoo.cli.main import main

    run_dir = run_tiny(tmp_path, report={"enabled": False}).run_dir
    other = make_image_folder(tmp_path / "other", classes=3, per_class=1, val_per_class=2, size=24, seed=5)
    capsys.readouterr()
    main(["report", str(run_dir), "--data", str(other / "val"), "--model", "last"])
    html = (run_dir / "report.html").read_text()
    assert f"{other / 'val'} (last model)" in section(html, "glance")
    assert len(DATA_URI.findall(section(html, "top-losses"))) == 6  # every image of the folder, fewer than 16


def test_a_100_class_report_stays_readable_and_small(tmp_path, tiny_backbone, one_thread):
    root = make_image_folder(tmp_path / "data", classes=100, per_class=2, val_per_class=2, size=16)
    spec = write_spec(tmp_path, root, train__epochs=2, data__batch_size=100, report__enabled=True)
    run_dir = run_spec(load_spec(spec, get_registry()), tmp_path / "run", stream=io.StringIO()).run_dir
    html = (run_dir / "report.html").read_text()
    size_kb = (run_dir / "report.html").stat().st_size / 1024
    assert size_kb < 1024, f"report of 100 classes is {size_kb:.0f} KB"
    assert "the 30 classes with the most errors" in section(html, "confusion")
    assert section(html, "per-class").count("<tr") == 101  # header and every class
    for figure in ("confusion", "confusion-normalised"):
        with Image.open(run_dir / f"report-{figure}.png") as image:
            assert image.width <= 1400 and image.height <= 1300, (figure, image.size)
    # curves, matrices, reliability diagram; thumbnails
    assert len(decoded_images(html.replace(section(html, "data-findings"), ""))) == 4 + 16


class BlocksTheReportFile:
    """A logger whose end() puts a folder where report.html goes: the report then cannot be written."""

    def __init__(self, options, run_dir):
        self.run_dir = run_dir

    def start(self, spec, classes):
        pass

    def epoch(self, metrics):
        pass

    def end(self, summary, best_path):
        (self.run_dir / "report.html").mkdir()


def test_a_report_that_cannot_be_made_leaves_the_finished_run_intact(tmp_path, tiny_backbone, one_thread):
    from tlzoo.registry import Component

    get_registry().catalog("loggers").add(Component("test/blocker", "blocks", BlocksTheReportFile, plugin="tests"))
    root = make_image_folder(tmp_path / "data", classes=3, per_class=4, val_per_class=2, size=16)
    spec = write_spec(tmp_path, root, loggers=["test/blocker"], train__epochs=1, report__enabled=True)
    stream = io.StringIO()
    result = run_spec(load_spec(spec, get_registry()), tmp_path / "run", stream=stream)
    log = stream.getvalue()
    assert f"report: not written: cannot write {result.run_dir / 'report.html'}: Is a directory" in log
    assert f"tlzoo report {result.run_dir}" in log
    assert (result.run_dir / "summary.json").is_file() and (result.run_dir / "best.safetensors").is_file()
    assert (result.run_dir / "report.html").is_dir()  # nothing was written over it


def test_the_curves_mark_the_epoch_where_groups_were_unfrozen(tmp_path, tiny_backbone, one_thread):
    strategy = {"name": "freeze_unfreeze", "options": {"frozen_epochs": 2}}
    result = run_tiny(tmp_path, train__strategy=strategy, train__epochs=3, report={"top_losses": 0})
    html = (result.run_dir / "report.html").read_text()
    assert "More parameter groups were unfrozen in epoch(s) 3." in section(html, "curves")
    assert "top_losses is 0" in section(html, "top-losses")
