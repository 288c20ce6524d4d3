"""train.head_first (LP-FT): the head fitted alone on the frozen features before a fine-tune's first epoch."""

from __future__ import annotations

import io

import pytest
import torch
from safetensors.torch import load_file

from tlzoo.engine.features import frozen_view, pooled_features
from tlzoo.engine.head_first import fit_head_first
from tlzoo.engine.linear_head import fit_linear_head
from tlzoo.engine.run import prepare, run_spec
from tlzoo.errors import SpecError
from tlzoo.registry import get_registry
from tlzoo.spec import load_spec

from support import TINY_CNN, make_image_folder, write_spec

pytestmark = pytest.mark.usefixtures("one_thread")
FINE_TUNE = {"strategy": {"name": "partial", "options": {"groups": 1}}, "epochs": 2, "seed": 5,
             "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 1e-4}, "label_smoothing": 0.1,
             "scheduler": {"name": "cosine"}}


def spec_file(tmp_path, name="spec.json", **train):
    TINY_CNN.register()
    data = tmp_path / "data"
    if not data.is_dir():
        make_image_folder(data, classes=3, per_class=8, val_per_class=4, noise=60)
    return write_spec(tmp_path, data, name, train={**FINE_TUNE, **train})


def test_the_head_is_the_linear_head_fitted_on_the_frozen_features_and_the_runs_draws_stay(tmp_path):
    resolved = load_spec(spec_file(tmp_path, head_first={"epochs": 12, "lr": 0.02}), get_registry())
    setup = prepare(resolved, tmp_path / "run", lambda line: None)
    random_head = setup.built.model.head.fc.weight.detach().clone()
    draws = torch.get_rng_state()
    lines = []
    fit_head_first(setup, lines.append)

    assert torch.equal(torch.get_rng_state(), draws)  # the loader's order and dropout see the same draws
    features = pooled_features(frozen_view(resolved), setup.data, lambda line: None)
    weight, bias = fit_linear_head(features.train_x, features.train_y, 3, 0.02, 12, 5, 0.1, 1e-4, 8)
    fc = setup.built.model.head.fc
    assert torch.equal(fc.weight.detach(), weight) and torch.equal(fc.bias.detach(), bias)
    assert not torch.allclose(fc.weight.detach(), random_head)
    assert lines[-1].startswith("head first: 12 epoch(s) of the head alone at lr 0.02 on the frozen features of "
                                "24 training images: val top-1 ")


def test_a_run_with_head_first_repeats_to_the_same_weights_and_a_resume_does_not_fit_it_again(tmp_path):
    registry = get_registry()
    spec = spec_file(tmp_path, head_first={"epochs": 10, "lr": 0.01})
    logs = [io.StringIO(), io.StringIO()]
    first, second = (run_spec(load_spec(spec, registry), tmp_path / name, stream=log)
                     for name, log in zip(("one", "two"), logs))
    assert "head first: 10 epoch(s)" in logs[0].getvalue()
    assert (tmp_path / "one" / "best.safetensors").read_bytes() == (tmp_path / "two" / "best.safetensors").read_bytes()
    timeless = [{k: v for k, v in run.summary["best"].items() if k != "seconds"} for run in (first, second)]
    assert timeless[0] == timeless[1]

    plain = run_spec(load_spec(spec_file(tmp_path, "plain.json"), registry), tmp_path / "plain", stream=io.StringIO())
    fitted, unfitted = (load_file(tmp_path / run / "best.safetensors") for run in ("one", "plain"))
    assert not torch.equal(fitted["head.0.weight"], unfitted["head.0.weight"])
    assert plain.summary["best"]["val_loss"] != first.summary["best"]["val_loss"]

    log = io.StringIO()
    longer = run_spec(load_spec(spec, registry, ["train.epochs=3"]), stream=log, resume=tmp_path / "one",
                      allow_changes=("epochs",))
    assert longer.summary["epochs_run"] == 3 and "head first" not in log.getvalue()


def test_head_first_with_a_hidden_layer_is_refused_naming_both_fields(tmp_path):
    spec = spec_file(tmp_path, head_first={"epochs": 5})
    with pytest.raises(SpecError) as caught:
        load_spec(spec, get_registry(), ["head.hidden=16"])
    message = str(caught.value)
    assert "train.head_first.epochs" in message and "head.hidden" in message
    load_spec(spec, get_registry(), ["head.hidden=16", "train.head_first.epochs=0"])  # off: any head


def test_class_weights_pull_the_fitted_head_towards_the_weighted_class():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(60, 8, generator=generator)
    labels = torch.arange(60) % 3  # features carry no class: only the weights and the bias decide
    plain = fit_linear_head(features, labels, 3, 0.05, 20, 1, 0.0, 0.0, 16)
    weighted = fit_linear_head(features, labels, 3, 0.05, 20, 1, 0.0, 0.0, 16, torch.tensor([1.0, 1.0, 10.0]))
    predicted = [(features @ weight.t() + bias).argmax(1) for weight, bias in (plain, weighted)]
    assert (predicted[1] == 2).sum() > (predicted[0] == 2).sum() + 20
