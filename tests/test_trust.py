"""Calibrated probabilities and "unknown": the pure parts against hand-computed cases, then a tiny run.

The run (tests/support.py's tiny CNN, head only, fp32) checks what a user sees:
the threshold keeps its share of the validation images, predict marks images
unknown in every format, a tampered threshold is refused, and a run saved
before trust data existed still loads and predicts, saying so once.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from support import TINY_CNN, make_image_folder, run_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def cli_output(capsys, *args: str):
    """The CLI in this process with test/tiny_cnn registered (the registry is fresh in every test)."""
    from reliability_support import cli_output as run

    TINY_CNN.register()
    return run(capsys, *args)


# --- calibration --------------------------------------------------------------------------------------

def test_temperature_matches_a_hand_computed_case():
    """Logits (2, 0) for four images, three of class 0: the NLL is least where softmax(2 / T)[0] = 3/4,
    so 2 / T = ln 3 and T = 2 / ln 3."""
    from tlzoo.trust.calibration import fit_temperature, nll

    logits = torch.tensor([[2.0, 0.0]] * 4)
    labels = torch.tensor([0, 0, 0, 1])
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(2 / math.log(3), rel=1e-9)
    assert nll(logits, labels, temperature) < nll(logits, labels, temperature * 1.01)
    assert nll(logits, labels, temperature) < nll(logits, labels, temperature * 0.99)


def test_temperature_stays_in_its_bounds_and_is_one_without_information():
    from tlzoo.trust.calibration import fit_temperature

    separable = torch.tensor([[3.0, 0.0], [0.0, 3.0]])  # always right: the NLL falls as T -> 0
    assert fit_temperature(separable, torch.tensor([0, 1]), min_temperature=0.1) == pytest.approx(0.1)
    wrong = torch.tensor([[3.0, 0.0], [0.0, 3.0]])  # always wrong: the NLL falls as T grows
    assert fit_temperature(wrong, torch.tensor([1, 0]), max_temperature=7.0) == pytest.approx(7.0)
    assert fit_temperature(torch.zeros(3, 4), torch.tensor([0, 1, 2])) == 1.0


def test_ece_nll_and_brier_by_hand():
    from tlzoo.trust.calibration import brier, ece, figures, reliability

    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 0, 1])
    # bins (13/15, 14/15] holds both 0.9s: accuracy 1/2, confidence 0.9; (8/15, 9/15] holds 0.6: 1 vs 0.6;
    # (10/15, 11/15] holds 0.7: 1 vs 0.7. ECE = 2/4 * 0.4 + 1/4 * 0.4 + 1/4 * 0.3
    assert ece(probs, labels) == pytest.approx(0.5 * 0.4 + 0.25 * 0.4 + 0.25 * 0.3)
    rows = reliability(probs, labels)
    assert len(rows) == 15 and sum(r["count"] for r in rows) == 4 and rows[13]["count"] == 2
    # Brier: (0.1^2 * 2) + (0.9^2 * 2) + (0.4^2 * 2) + (0.3^2 * 2), over 4 images
    assert brier(probs, labels) == pytest.approx((0.02 + 1.62 + 0.32 + 0.18) / 4)
    logits = torch.tensor([[1.0, 0.0]])
    assert figures(logits, torch.tensor([0]), 1.0)["nll"] == pytest.approx(math.log(1 + math.exp(-1)))


# --- scores and threshold --------------------------------------------------------------------------------

def test_threshold_keeps_the_stated_share():
    from tlzoo.trust.threshold import kept_share, score_table, threshold_for

    scores = torch.rand(200, generator=torch.Generator().manual_seed(0))
    table = score_table(scores)
    for keep in (0.5, 0.9, 0.95, 0.99, 1.0):
        threshold = threshold_for(keep, table)
        assert keep <= kept_share(scores, threshold) < keep + 1 / 200 + 1e-12
    assert threshold_for(1.0, table) == max(table)
    big = score_table(torch.arange(5000.0), limit=100)
    assert len(big) == 100 and big[0] == 0.0 and big[-1] == 4999.0


def test_the_image_on_the_threshold_stays_known_under_float_noise():
    """The threshold is a validation image's own score: fp32 noise between runtimes must not flip that image."""
    from tlzoo.trust.threshold import above, is_unknown, kept_share, threshold_for

    scores = torch.tensor([0.5, 1.25, 2.0, 37.5])
    threshold = threshold_for(0.75, [float(s) for s in scores])  # 2.0, the third image's score
    noisy = scores * (1 + 6e-7)  # what another runtime computes for the same images
    assert is_unknown(noisy, threshold).tolist() == is_unknown(scores, threshold).tolist() == [False] * 3 + [True]
    assert kept_share(noisy, threshold) == kept_share(scores, threshold) == 0.75
    assert not above(2.0 + 1e-6, 2.0) and above(2.0 + 1e-4, 2.0) and above(-1e-4, -2e-4)


def test_knn_and_mahalanobis_scores_grow_away_from_the_training_features():
    from tlzoo.trust.options import KnnOptions, MahalanobisOptions
    from tlzoo.trust.scores import build_scorer, fit_tensors

    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(8)[:2] * 5
    train = torch.cat([centres[i] + 0.3 * torch.randn(50, 8, generator=generator) for i in (0, 1)])
    labels = torch.tensor([0] * 50 + [1] * 50)
    near = centres[0] + 0.3 * torch.randn(10, 8, generator=generator)
    far = torch.eye(8)[5:8].repeat(4, 1) * 5  # other directions
    logits = torch.zeros(len(near), 2)
    for method, options in (("knn", KnnOptions(k=1)), ("mahalanobis", MahalanobisOptions())):
        tensors = fit_tensors(method, options, train, labels, 2)
        scorer = build_scorer(method, options.model_dump(), 1.0, tensors)
        assert scorer(near, logits).max() < scorer(far, torch.zeros(len(far), 2)).min(), method
    knn = build_scorer("knn", {"k": 1}, 1.0, fit_tensors("knn", KnnOptions(k=1), train, labels, 2))
    # a training image is its own nearest: 0 up to the fp16 bank (sqrt(2 - 2s) magnifies rounding near s = 1)
    assert knn(train[:5], logits[:5]).abs().max() < 2e-2


# --- spec ----------------------------------------------------------------------------------------------

def test_spec_fields_and_method_options_are_validated(tmp_path):
    from tlzoo.errors import SpecError
    from tlzoo.registry import get_registry
    from tlzoo.spec import load_spec
    from support import write_spec

    TINY_CNN.register()
    spec = load_spec(write_spec(tmp_path, tmp_path, train={"unknown": "energy", "calibration": "none"}),
                     get_registry())
    assert spec.spec.train.unknown.method == "energy" and spec.spec.train.calibration.name == "none"
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, tmp_path, name="bad.json", train={
            "unknown": {"method": "knn", "keep": 1.5, "options": {"kk": 3}}}), get_registry())
    text = str(caught.value)
    assert "train.unknown.keep" in text and "train.unknown.options: kk: Extra inputs" in text and "k, bank_size" in text


# --- a tiny run ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trusted_run(tmp_path_factory):
    """A head-only tiny run (4 classes, 8 validation images a class) and images unlike its training data."""
    import tlzoo.runtime.device as runtime

    folder = tmp_path_factory.mktemp("trust")
    cpus, runtime.available_cpus = runtime.available_cpus, lambda: 1
    try:
        TINY_CNN.register()
        make_image_folder(folder / "data", classes=4, per_class=10, val_per_class=8)
        result, _, log = run_tiny(folder, "run", train={"epochs": 3})
    finally:
        runtime.available_cpus = cpus
    strange = folder / "strange"
    strange.mkdir()
    rng = np.random.default_rng(1)
    Image.new("RGB", (32, 32), (0, 0, 0)).save(strange / "black.png")
    Image.fromarray((np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)).convert("RGB").save(
        strange / "checkers.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(strange / "noise.png")
    return result, log, folder


def test_run_fits_and_stores_trust_and_keeps_the_share_on_validation(trusted_run):
    import tlzoo

    result, log, folder = trusted_run
    TINY_CNN.register()
    trust = result.summary["trust"]
    assert "trust: temperature" in log and trust["unknown"]["method"] == "knn"
    assert trust["calibration"]["val"]["after"]["nll"] <= trust["calibration"]["val"]["before"]["nll"] + 1e-12
    sidecar = json.loads((result.run_dir / "best.json").read_text())
    assert sidecar["trust"]["unknown"]["threshold"] == trust["unknown"]["threshold"]
    model = tlzoo.load(result.run_dir)
    val = folder / "data" / "val"
    for keep in (None, 0.5, 0.75):
        predictions = model.predict(val)
        predictions = model.predict(val, keep=keep) if keep is not None else predictions
        kept = sum(not p.unknown for p in predictions) / len(predictions)
        assert kept >= (keep or 0.95), keep  # the threshold was chosen on exactly these images
        assert all(p.ood_score is not None for p in predictions)
    assert not any(p.unknown for p in model.predict(val, keep=0.5, reject=False))
    probabilities = [p.top[0][1] for p in model.predict(val)]
    with torch.no_grad():
        raw = model.module(torch.stack([_tensor(model, path) for path in sorted(val.rglob("*.png"))]))
    expected = (raw / trust["calibration"]["temperature"]).softmax(1).max(1).values
    assert np.allclose(sorted(probabilities), sorted(expected.tolist()), atol=1e-5)  # calibrated


def _tensor(model, path):
    from tlzoo.data.images import load_rgb
    from tlzoo.data.transforms import build_eval_transform

    return build_eval_transform(model.data_config)(load_rgb(path))


def test_predict_shows_unknown_in_every_format(trusted_run, capsys):
    result, _, folder = trusted_run
    val = folder / "data" / "val"
    code, out, err = cli_output(capsys, "predict", str(result.run_dir), str(val), "--keep", "0.5", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and {r["unknown"] for r in rows} == {True, False}
    assert all(isinstance(r["ood_score"], float) for r in rows)
    unknown = {r["path"] for r in rows if r["unknown"]}
    code, out, _ = cli_output(capsys, "predict", str(result.run_dir), str(val), "--keep", "0.5", "--format", "csv")
    lines = out.splitlines()
    assert lines[0] == "path,rank,class,probability,error,unknown,ood_score"
    assert {line.split(",")[0] for line in lines[1:] if line.split(",")[5] == "true"} == unknown
    code, out, _ = cli_output(capsys, "predict", str(result.run_dir), str(val), "--keep", "0.5")
    assert {line.split("  ")[0].strip() for line in out.splitlines() if "  UNKNOWN  " in line} == unknown
    assert all(" ood " in line for line in out.splitlines())
    code, out, _ = cli_output(capsys, "predict", str(result.run_dir), str(val), "--keep", "0.5", "--no-reject")
    assert "UNKNOWN" not in out
    code, _, err = cli_output(capsys, "predict", str(result.run_dir), str(val), "--keep", "0")
    assert code == 2 and "--keep 0.0" in err


def test_evaluate_reports_calibration_and_the_share_kept(trusted_run, capsys):
    result, _, _ = trusted_run
    code, out, _ = cli_output(capsys, "evaluate", str(result.run_dir), "--json")
    report = json.loads(out)
    assert code == 0 and report["calibration"]["temperature"] == result.summary["trust"]["calibration"]["temperature"]
    assert report["calibration"]["after"]["ece"] == pytest.approx(
        result.summary["trust"]["calibration"]["val"]["after"]["ece"], abs=1e-9)
    assert report["unknown"]["kept"] == pytest.approx(result.summary["trust"]["unknown"]["val_kept"])


def copy_run(run_dir, target):
    shutil.copytree(run_dir, target)
    return target


def test_a_tampered_threshold_in_the_run_directory_is_refused(trusted_run, capsys, tmp_path):
    from tlzoo.rundir.checkpoint import load_checkpoint, save_checkpoint
    from tlzoo.trust.threshold import threshold_for

    result, _, folder = trusted_run
    image = next((folder / "data" / "val").rglob("*.png"))
    edited = copy_run(result.run_dir, tmp_path / "edited")
    sidecar = json.loads((edited / "best.json").read_text())
    sidecar["trust"]["unknown"]["threshold"] *= 10  # nothing would be called unknown
    (edited / "best.json").write_text(json.dumps(sidecar))
    code, out, err = cli_output(capsys, "predict", str(edited), str(image))
    assert code == 2 and out == "" and "best.json is damaged: trust" in err
    assert "is not the one its validation scores give" in err
    # a consistent edit (keep and its threshold together) disagrees with the weights file's copy
    unknown = sidecar["trust"]["unknown"]
    unknown["keep"], unknown["threshold"] = 0.5, threshold_for(0.5, unknown["val_scores"])
    (edited / "best.json").write_text(json.dumps(sidecar))
    code, out, err = cli_output(capsys, "predict", str(edited), str(image))
    assert code == 2 and out == "" and "best.json disagrees with the metadata inside" in err and "trust" in err
    # edited in the weights file's header as well: the record's own check refuses it
    both = copy_run(result.run_dir, tmp_path / "both")
    tensors, meta = load_checkpoint(both / "best")
    meta["trust"]["unknown"]["threshold"] *= 10
    save_checkpoint(both / "best", tensors, meta)
    code, out, err = cli_output(capsys, "predict", str(both), str(image))
    assert code == 2 and out == "" and "is not the one its validation scores give" in err


def test_an_old_run_without_trust_data_loads_and_predicts_as_before_saying_so_once(trusted_run, capsys, tmp_path):
    import tlzoo
    from tlzoo.rundir.checkpoint import load_checkpoint, save_checkpoint
    from tlzoo.rundir.training_state import strip_training

    result, _, folder = trusted_run
    TINY_CNN.register()
    old = copy_run(result.run_dir, tmp_path / "old")
    tensors, meta = load_checkpoint(old / "best")
    meta.pop("trust")
    save_checkpoint(old / "best", strip_training(tensors), meta)  # what best held before this change
    capsys.readouterr()
    model = tlzoo.load(old)
    first = model.predict(folder / "strange")
    second = model.predict(folder / "data" / "val")
    err = capsys.readouterr().err
    assert err.count("has no calibration or unknown threshold") == 1
    assert not any(p.unknown for p in first + second) and all(p.ood_score is None for p in first + second)
    with torch.no_grad():
        logits = model.module(torch.stack([_tensor(model, folder / "strange" / "black.png")]))
    black = next(p for p in first if p.path.name == "black.png")
    assert black.top[0][1] == pytest.approx(float(logits.softmax(1).max()), abs=1e-5)  # uncalibrated, as before
    assert "calibration" not in model.evaluate()
