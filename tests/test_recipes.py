"""Recipe features: EMA of the trainable weights, mixup/cutmix (manifold on cached activations),
test-time augmentation and layer-wise learning-rate decay."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tlzoo.engine.ema import WeightAverage
from tlzoo.engine.mixing import Mixer, cutmix
from tlzoo.engine.optim import layer_decay_factors
from tlzoo.engine.tta import tta_logits, views
from tlzoo.registry import get_registry
from tlzoo.spec import EmaSpec, MixSpec, load_spec

from support import make_image_folder, run_tiny


# -- EMA --------------------------------------------------------------------------------------------------------

def test_ema_decay_follows_model_ema_v3():
    warm = WeightAverage(EmaSpec(decay=0.9, warmup=True, warmup_gamma=1.0, warmup_power=2 / 3))
    assert warm.decay_at(1) == 0.0  # the first update copies the weights
    assert warm.decay_at(2) == pytest.approx(1 - 2 ** (-2 / 3))
    assert warm.decay_at(3) == pytest.approx(1 - 3 ** (-2 / 3))
    assert warm.decay_at(10_000) == 0.9  # capped
    plain = WeightAverage(EmaSpec(decay=0.9, warmup=False, update_after_step=2))
    assert [plain.decay_at(s) for s in (1, 2, 3, 4)] == [0.0, 0.0, 0.0, 0.9]


def test_ema_is_the_hand_computed_average_of_the_trainable_weights_only():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 1))
    model[0].requires_grad_(False)  # frozen: never averaged
    average = WeightAverage(EmaSpec(decay=0.5, warmup=False))
    average.track_trainable(model)
    assert set(average.shadow) == {"1.weight", "1.bias", "1.running_mean", "1.running_var", "2.weight", "2.bias"}
    start = model[2].weight.detach().clone()
    values = [start]
    for step in (1, 2, 3):
        with torch.no_grad():
            model[2].weight.add_(float(step))
        values.append(model[2].weight.detach().clone())
        average.update(model, step)
    # step 1: decay 0 (copy); steps 2, 3: 0.5 x old + 0.5 x new
    expected = values[1]
    expected = 0.5 * expected + 0.5 * values[2]
    expected = 0.5 * expected + 0.5 * values[3]
    assert torch.allclose(average.shadow["2.weight"], expected)
    frozen_before = model[0].weight.detach().clone()
    own = model[2].weight.detach().clone()
    with average.applied(model):
        assert torch.allclose(model[2].weight, expected)
    assert torch.equal(model[2].weight, own)  # the model's own weights are back
    assert torch.equal(model[0].weight, frozen_before)


def test_ema_run_saves_the_weights_that_validated_as_best(tmp_path, tiny_backbone, capsys):
    from tlzoo.cli.main import main

    make_image_folder(tmp_path / "data", classes=3, per_class=8)
    result, metrics, log = run_tiny(tmp_path, "ema", train__epochs=3, cache__dir=str(tmp_path / "cache"),
                                    train__ema={"enabled": True, "decay": 0.9})
    assert "recipe: EMA of the trainable weights" in log
    for record in metrics:
        assert record["val_weights"] in ("ema", "model")
        chosen = record[f"{record['val_weights']}_val_top1"]
        assert record["val_top1"] == chosen
    best = max(metrics, key=lambda r: r["is_best"] and r["epoch"])  # the last epoch marked best
    capsys.readouterr()
    main(["evaluate", str(result.run_dir), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["loss"] == pytest.approx(best["val_loss"], abs=1e-5)  # best.safetensors is what validated


# -- mixup / cutmix -----------------------------------------------------------------------------------------------

def test_mixup_blends_the_batch_with_itself_reversed_and_mixes_the_loss():
    mixer = Mixer.from_spec(MixSpec(mixup_alpha=0.4), seed=3)
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 0])
    mixed = mixer.mix(x, y, step=7)
    assert 0.0 <= mixed.lam <= 1.0
    assert torch.allclose(mixed.x, mixed.lam * x + (1 - mixed.lam) * x.flip(0))
    assert torch.equal(mixed.y_other, y.flip(0))
    again = mixer.mix(x, y, step=7)  # a pure function of (seed, step): resume mixes the same
    assert again.lam == mixed.lam
    logits = torch.randn(4, 3)
    criterion = nn.CrossEntropyLoss()
    want = mixed.lam * criterion(logits, y) + (1 - mixed.lam) * criterion(logits, y.flip(0))
    assert torch.allclose(mixed.loss(criterion, logits, y), want)
    assert Mixer.from_spec(MixSpec(), seed=0) is None  # off by default


def test_cutmix_box_area_sets_lam():
    x, other = torch.zeros(2, 1, 10, 10), torch.ones(2, 1, 10, 10)
    mixed, lam = cutmix(x, other, 0.75, torch.Generator().manual_seed(0))
    pasted = mixed[0].sum().item() / 100
    assert lam == pytest.approx(1 - pasted)
    assert 0 < pasted < 1


def test_manifold_mixup_keeps_the_cache_hits(tmp_path, tiny_backbone, monkeypatch):
    from tlzoo.cache.store import ActivationStore

    reads = []
    original = ActivationStore.read
    monkeypatch.setattr(ActivationStore, "read", lambda self, rows, views: reads.append(len(rows)) or
                        original(self, rows, views))
    make_image_folder(tmp_path / "data", classes=3, per_class=8)
    common = dict(train__epochs=3, cache__enabled=True, cache__dir=str(tmp_path / "cache"))
    _, plain, plain_log = run_tiny(tmp_path, "plain", **common)
    plain_reads, reads[:] = list(reads), []
    _, mixed, mixed_log = run_tiny(tmp_path, "mixed", train__mix={"mixup_alpha": 0.4}, **common)
    assert plain_reads and reads == plain_reads  # every batch still comes from the cache
    assert "recipe: mixup alpha 0.4" in mixed_log
    assert "computing stage-" not in mixed_log  # the first run's entry served the second as it was
    assert [r["train_loss"] for r in mixed] != [r["train_loss"] for r in plain]  # mixing did happen


# -- TTA ----------------------------------------------------------------------------------------------------------

def test_tta_none_is_the_plain_path_and_flip_averages_probabilities():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(tta_logits(net, x, "none"), net(x))
    flipped = tta_logits(net, x, "flip")
    want = (net(x).softmax(1) + net(x.flip(-1)).softmax(1)) / 2
    assert torch.allclose(flipped.softmax(1), want, atol=1e-6)
    assert len(views(x, "flip_crops")) == 6 and all(v.shape == x.shape for v in views(x, "flip_crops"))


def test_evaluate_and_predict_with_tta(tmp_path, tiny_backbone, capsys):
    from tlzoo.cli.main import main

    make_image_folder(tmp_path / "data", classes=3, per_class=8)
    result, metrics, _ = run_tiny(tmp_path, "run", train__epochs=1, cache__enabled=False)

    def cli_json(*args):
        capsys.readouterr()
        main([*args, "--json"] if args[0] == "evaluate" else list(args))
        return capsys.readouterr().out

    plain = json.loads(cli_json("evaluate", str(result.run_dir)))
    none = json.loads(cli_json("evaluate", str(result.run_dir), "--tta", "none"))
    assert none == plain
    assert plain["loss"] == pytest.approx(metrics[0]["val_loss"], abs=1e-6)
    flip = json.loads(cli_json("evaluate", str(result.run_dir), "--tta", "flip_crops"))
    assert flip["images"] == plain["images"] and flip["loss"] != plain["loss"]
    image = str(next((tmp_path / "data" / "val" / "class0").glob("*.png")))
    out = json.loads(cli_json("predict", str(result.run_dir), image, "--format", "json", "--tta", "flip"))
    assert len(out) == 1
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", str(result.run_dir), "--tta", "mirror"])
    assert stop.value.code == 2


def test_validation_tta_in_the_spec_scores_images_not_cached_activations(tmp_path, tiny_backbone):
    make_image_folder(tmp_path / "data", classes=3, per_class=8)
    common = dict(train__epochs=2, cache__enabled=True, cache__dir=str(tmp_path / "cache"))
    _, plain, _ = run_tiny(tmp_path, "plain", **common)
    _, flipped, log = run_tiny(tmp_path, "flip", train__tta="flip", **common)
    assert "validation TTA 'flip'" in log
    assert [r["train_loss"] for r in flipped] == [r["train_loss"] for r in plain]  # training is untouched
    assert [r["val_loss"] for r in flipped] != [r["val_loss"] for r in plain]


# -- layer-wise lr decay -----------------------------------------------------------------------------------------

def test_layer_decay_factors_count_from_the_top():
    assert layer_decay_factors(4, 0.5) == [0.125, 0.25, 0.5, 1.0]
    assert layer_decay_factors(3, None) == [1.0, 1.0, 1.0]


def test_layer_decay_scales_each_group_of_a_run(tmp_path, tiny_backbone):
    make_image_folder(tmp_path / "data", classes=3, per_class=8)
    common = dict(train__epochs=1, train__strategy="none", train__backbone_lr_mult=0.5, cache__enabled=False)
    _, plain, _ = run_tiny(tmp_path, "plain", **common)
    _, decayed, log = run_tiny(tmp_path, "decayed", train__layer_decay=0.5, **common)
    assert "layer-wise lr decay 0.5" in log
    # tiny net: 3 backbone groups at lr x 0.5, the head at lr; then x 0.5^(3 - g)
    assert plain[0]["lr"] == pytest.approx([0.005, 0.005, 0.005, 0.01])
    assert decayed[0]["lr"] == pytest.approx([0.005 * 0.125, 0.005 * 0.25, 0.005 * 0.5, 0.01])


def test_recipe_fields_are_validated(tmp_path):
    from tlzoo.errors import SpecError

    for bad in ({"layer_decay": 0}, {"layer_decay": 1.5}, {"ema": {"decay": 1.0}}, {"mix": {"mixup_alpha": -1}},
                {"tta": "mirror"}):
        spec = {"data": {"reader": "imagefolder"}, "train": bad}
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(spec))
        with pytest.raises(SpecError):
            load_spec(path, get_registry())
