"""torchvision pretrained weights through tlzoo's own seam: the torch hub cache, tlzoo's safe loader, no patching.

Weight files are made in the test (from a freshly built network, in the layout
of the published files) and put in a TORCH_HOME of the test's own.
"""

from __future__ import annotations

import os

import pytest
import torch
from torchvision.models import _api, get_model, get_model_weights

from tlzoo.errors import WeightsError

from conftest import resolved_backbone


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("TLZOO_OFFLINE", "1")  # a cache miss must not try the network
    return tmp_path / "torch"


def published_file(torch_home, name: str, state: dict):
    """Save `state` where torch.hub caches the DEFAULT weights of `name`."""
    url = get_model_weights(name).DEFAULT.url
    path = torch_home / "hub" / "checkpoints" / os.path.basename(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def old_densenet_keys(state: dict) -> dict:
    """The published DenseNet files name 'norm1' as 'norm.1' (and conv1, relu2, ...) and predate num_batches_tracked."""
    renamed = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        parts = [p[:-1] + "." + p[-1] if p[:-1] in ("norm", "relu", "conv") and p[-1] in "12" else p for p in parts]
        renamed[".".join(parts)] = value
    return renamed


def network_file(name: str) -> dict:
    """A state dict in the layout of `name`'s published file (GoogLeNet and Inception keep their aux heads)."""
    torch.manual_seed(0)
    extra = {"aux_logits": True, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    state = get_model(name, weights=None, **extra).state_dict()
    return old_densenet_keys(state) if name.startswith("densenet") else state


def torchvisions_own_build(name: str, path):
    """torchvision's builder with its weights enum, reading the same file (for comparison only)."""
    from tlzoo.model.weights import load_state_file

    original = _api.WeightsEnum.get_state_dict
    _api.WeightsEnum.get_state_dict = lambda self, *args, **kwargs: load_state_file(path)
    try:
        return get_model(name, weights=get_model_weights(name).DEFAULT)
    finally:
        _api.WeightsEnum.get_state_dict = original


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "densenet121", "googlenet"])
def test_pretrained_build_matches_torchvisions_own(torch_home, name):
    path = published_file(torch_home, name, network_file(name))
    backbone = resolved_backbone(f"torchvision/{name}").build()
    reference = torchvisions_own_build(name, path)
    ours, theirs = backbone.model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()  # GoogLeNet's aux heads dropped, DenseNet keys renamed, as torchvision does
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    assert backbone.weights == f"torchvision:{get_model_weights(name).DEFAULT.name}"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(backbone.model.eval()(x), reference.eval()(x))


def test_build_does_not_need_torchvisions_private_download_function(torch_home, monkeypatch):
    published_file(torch_home, "mobilenet_v3_small", network_file("mobilenet_v3_small"))
    monkeypatch.delattr(_api, "load_state_dict_from_url")  # as in a torchvision version that renamed it
    backbone = resolved_backbone("torchvision/mobilenet_v3_small").build()
    assert backbone.weights.startswith("torchvision:")


def test_a_file_that_does_not_fit_is_a_weights_error(torch_home):
    published_file(torch_home, "mobilenet_v3_small", {"features.0.0.weight": torch.zeros(1)})
    with pytest.raises(WeightsError, match="do not fit the network"):
        resolved_backbone("torchvision/mobilenet_v3_small").build()


def test_missing_weights_offline_name_the_cache_file(torch_home):
    with pytest.raises(WeightsError) as caught:
        resolved_backbone("torchvision/mobilenet_v3_small").build()
    expected = torch_home / "hub" / "checkpoints" / os.path.basename(get_model_weights("mobilenet_v3_small").DEFAULT.url)
    assert str(expected) in str(caught.value) and "weights: \"none\"" in str(caught.value)
