"""tlzoo rank on a tiny backbone: LogME against hand-computed values, the probe, kNN, the cached features."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from support import make_image_folder, write_spec
from tlzoo.probe.logme import Spectrum, log_evidence, logme, maximise_evidence
from tlzoo.findings.logistic import stratified_folds
from tlzoo.probe.scores import knn_top1, linear_probe


def test_log_evidence_matches_a_hand_computed_gaussian():
    # F = (1, 1)^T, alpha = beta = 1: y ~ N(0, I + F F^T) = N(0, [[2, 1], [1, 2]]), det 3, y^T C^-1 y = 2/3 at y = (1, 0)
    spectrum = Spectrum.of(torch.tensor([[1.0], [1.0]]))
    expected = -math.log(2 * math.pi) - 0.5 * math.log(3) - 1 / 3
    assert log_evidence(spectrum, torch.tensor([1.0, 0.0]), 1.0, 1.0) == pytest.approx(expected, abs=1e-12)


def test_evidence_maximum_matches_the_hand_derived_one():
    # y = (3, 1) on F = (1, 1)^T: along (1, 1)/sqrt2 y^2 = 8 = 1/beta + 2/alpha, across it y^2 = 2 = 1/beta,
    # so the maximum is at beta = 1/2, alpha = 1/3 with log p = -log 16 / 2 - 1 - log 2pi; LogME is that / n
    alpha, beta, per_sample = maximise_evidence(Spectrum.of(torch.tensor([[1.0], [1.0]])), torch.tensor([3.0, 1.0]))
    assert alpha == pytest.approx(1 / 3, rel=1e-4) and beta == pytest.approx(1 / 2, rel=1e-4)
    assert per_sample == pytest.approx((-0.5 * math.log(16) - 1 - math.log(2 * math.pi)) / 2, abs=1e-9)


@pytest.mark.parametrize("shape", [(7, 10), (10, 7)])  # fewer samples than dimensions, and more
def test_log_evidence_equals_the_multivariate_normal_density(shape):
    torch.manual_seed(0)
    features, y = torch.randn(*shape, dtype=torch.float64), torch.randn(shape[0], dtype=torch.float64)
    alpha, beta = 0.7, 2.3
    covariance = torch.eye(shape[0], dtype=torch.float64) / beta + features @ features.T / alpha
    density = torch.distributions.MultivariateNormal(torch.zeros(shape[0], dtype=torch.float64), covariance)
    assert log_evidence(Spectrum.of(features), y, alpha, beta) == pytest.approx(float(density.log_prob(y)), abs=1e-9)


def test_the_fixed_point_is_the_maximum_of_the_evidence():
    torch.manual_seed(1)
    features = torch.randn(40, 5, dtype=torch.float64)
    y = features @ torch.randn(5, dtype=torch.float64) + 0.5 * torch.randn(40, dtype=torch.float64)
    spectrum = Spectrum.of(features)
    alpha, beta, best = maximise_evidence(spectrum, y)
    for da, db in ((1.1, 1), (1 / 1.1, 1), (1, 1.1), (1, 1 / 1.1)):  # nudging either lowers the evidence
        assert log_evidence(spectrum, y, alpha * da, beta * db) / 40 < best


def clusters(n_per_class: int, classes: int, spread: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, 16, generator=torch.Generator().manual_seed(99)) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(labels.numel(), 16, generator=generator), labels


def test_logme_prefers_features_that_separate_the_classes(one_thread):
    tight, labels = clusters(20, 4, 0.5)
    loose, _ = clusters(20, 4, 5.0)
    assert logme(tight, labels, 4) > logme(loose, labels, 4)


def test_probe_and_knn_score_separable_and_random_features(one_thread):
    train_x, train_y = clusters(20, 4, 0.5, seed=1)
    val_x, val_y = clusters(10, 4, 0.5, seed=2)
    probe = linear_probe(train_x, train_y, val_x, val_y, 4)
    assert probe.top1 == 1.0 and probe.cv_top1 == 1.0
    assert knn_top1(train_x, train_y, val_x, val_y, 4, k=5) == 1.0
    noise = torch.randn_like(val_x)
    assert linear_probe(train_x, train_y, noise, val_y, 4).top1 < 0.6


def test_knn_votes_by_cosine_similarity():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    # (0.2, 1) is nearest to class 1's single point; with k=3 class 0's two votes are weaker than its one
    assert knn_top1(train, labels, torch.tensor([[0.2, 1.0]]), torch.tensor([1]), 2, k=3) == 1.0
    assert knn_top1(train, labels, torch.tensor([[1.0, 0.2]]), torch.tensor([0]), 2, k=1) == 1.0


def test_folds_are_stratified_and_cover_every_row():
    labels = torch.tensor([0] * 9 + [1] * 6)
    folds = stratified_folds(labels, 3)
    assert sorted(torch.cat(folds).tolist()) == list(range(15))
    assert all((labels[fold] == 0).sum() == 3 and (labels[fold] == 1).sum() == 2 for fold in folds)


@pytest.fixture
def tiny_data(tmp_path, tiny_backbone, monkeypatch):
    monkeypatch.setenv("TLZOO_CPU_BF16", "0")
    make_image_folder(tmp_path / "images", classes=3, per_class=6, val_per_class=3)
    spec = write_spec(tmp_path, tmp_path / "images", cache={"dir": str(tmp_path / "cache")})
    return spec


def rank_once(spec_path, candidates, **options):
    from tlzoo.data.labelled import load_labelled
    from tlzoo.probe.ranking import rank_backbones
    from tlzoo.registry import get_registry
    from tlzoo.spec import load_raw, load_spec

    resolved = load_spec(spec_path, get_registry())
    lines = []
    ranking = rank_backbones(load_raw(spec_path), resolved.base_dir, str(spec_path), get_registry(), candidates,
                             load_labelled(resolved), lines.append, **options)
    return ranking, lines


def test_second_rank_reads_the_cached_features_and_a_head_only_run_reuses_them(tiny_data, tmp_path):
    from tlzoo.engine.run import run_spec
    from tlzoo.probe.ranking import Candidate
    from tlzoo.registry import get_registry
    from tlzoo.spec import load_spec

    tiny = Candidate("test/tiny_cnn", "shipped")
    first, log = rank_once(tiny_data, [tiny, Candidate("test/random_only", "none")])
    assert [row["backbone"] for row in first.rows] == ["test/tiny_cnn"]
    assert first.skipped == [{"backbone": "test/random_only",
                              "reason": "no pretrained weights (random features rank nothing)"}]
    row = first.rows[0]
    assert not row["cached"] and row["features_per_s"] > 0 and row["features"] == 16
    assert 0 <= row["probe_top1"] <= 1 and 0 <= row["knn_top1"] <= 1 and math.isfinite(row["logme"])
    assert any("computing stage-3 activations" in line for line in log)
    second, log = rank_once(tiny_data, [tiny])
    assert second.rows[0]["cached"] and second.rows[0]["features_per_s"] is None
    assert second.rows[0]["probe_top1"] == row["probe_top1"] and second.rows[0]["logme"] == row["logme"]
    assert not any("computing" in line for line in log)
    # a head_only run with augment none trains on the very entries rank made
    stream = io.StringIO()
    run_spec(load_spec(tiny_data, get_registry()), tmp_path / "run", stream=stream)
    assert "cache: reusing stage-3 activations of 18 train images" in stream.getvalue()
    assert "computing" not in stream.getvalue()


def test_budget_and_offline_skip_with_their_reasons(tiny_data):
    from tlzoo.probe.ranking import Candidate

    ranking, _ = rank_once(tiny_data, [Candidate("test/tiny_cnn", "shipped")], budget_minutes=0)
    assert ranking.rows == [] and "--budget of 0 min" in ranking.skipped[0]["reason"]
    ranking, _ = rank_once(tiny_data, [Candidate("timm/resnet18", "download")], offline=True)
    assert ranking.skipped[0]["reason"].startswith("--offline: weights are not on this machine")


def test_written_winner_spec_runs_from_another_folder(tiny_data, tmp_path):
    from tlzoo.probe.ranking import write_winner_spec
    from tlzoo.registry import get_registry
    from tlzoo.spec import load_raw, load_spec

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    raw = load_raw(tiny_data)
    raw["backbone"] = "some/other"  # the winner replaces the spec's backbone; the rest stays as written
    raw["data"]["reader"]["options"]["root"] = "images"  # relative to the spec's folder
    write_winner_spec(raw, "test/tiny_cnn", tiny_data.parent, get_registry(), elsewhere / "best.json")
    written = json.loads((elsewhere / "best.json").read_text())
    assert written["backbone"] == {"name": "test/tiny_cnn", "weights": "pretrained"}
    assert written["train"] == raw["train"] and written["data"]["augment"] == "none"
    resolved = load_spec(elsewhere / "best.json", get_registry())
    assert resolved.path(resolved.spec.data.reader.options["root"]) == tmp_path / "images"


@pytest.mark.parametrize("args, message", [
    ([], "tlzoo rank needs backbone patterns"),
    (["--backbones", "no_such_net*"], "no backbone matches pattern 'no_such_net*'"),
    (["--backbones", "efficientnet_lite0", "--format", "xml"], "--format 'xml': choose one of table, json, csv"),
])
def test_rank_command_refuses_with_a_user_error(tiny_data, args, message, capsys):
    from tlzoo.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["rank", str(tiny_data), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_rank_help_says_what_the_probe_is(capsys):
    from tlzoo.cli.main import main

    main(["rank", "--help"])  # help exits 0: main() returns
    text = " ".join(capsys.readouterr().out.split())
    assert "heuristic for the accuracy after fine-tuning" in text and "0.5-0.8" in text


def test_rank_without_the_cache_scores_the_same_features(tiny_data, tmp_path):
    from tlzoo.probe.ranking import Candidate
    from tlzoo.spec import load_raw

    cached, _ = rank_once(tiny_data, [Candidate("test/tiny_cnn", "shipped")])
    raw = load_raw(tiny_data)
    raw["cache"] = {"enabled": False}
    off = tmp_path / "off.json"
    off.write_text(json.dumps(raw))
    uncached, log = rank_once(off, [Candidate("test/tiny_cnn", "shipped")])
    assert "cache: off (cache.enabled is false)" in log and not uncached.rows[0]["cached"]
    assert uncached.rows[0]["probe_top1"] == pytest.approx(cached.rows[0]["probe_top1"], abs=1e-6)
    assert uncached.rows[0]["logme"] == pytest.approx(cached.rows[0]["logme"], rel=1e-4)
