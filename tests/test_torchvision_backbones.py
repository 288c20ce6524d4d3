"""torchvision backbones: every family builds with a new head, its split is exact, weights come from the API."""

from __future__ import annotations

import pytest
import torch
import torchvision
from pydantic import ValidationError
from torch import nn
from torchvision.models import get_model_builder, get_model_weights, list_models

from conftest import resolved_backbone as resolved
from tlzoo.model.backbone import TransferModel
from tlzoo.errors import WeightsError
from tlzoo.model.build import build_model
from tlzoo.spec import HeadSpec
from tlzoo.plugins.torchvision import backbones as tvb
from tlzoo.plugins.torchvision.split import FAMILIES, family_of
from tlzoo.registry import get_registry

NAMES = list_models(module=torchvision.models)
# models built for one input size; everything else is tested on 64x64
INPUT = {"inception_v3": 80, "vit_b_16": 224, "maxvit_t": 224}


def family(name: str) -> tuple[str, bool]:
    """The module defining the builder; v2 variants (EfficientNetV2, Swin V2) count as their own family."""
    return get_model_builder(name).__module__, "_v2" in name


def smallest_per_family() -> list[str]:
    best: dict[tuple, str] = {}
    for name in NAMES:
        params = get_model_weights(name).DEFAULT.meta["num_params"]
        key = family(name)
        if key not in best or params < get_model_weights(best[key]).DEFAULT.meta["num_params"]:
            best[key] = name
    return sorted(best.values())


SMALLEST = smallest_per_family()


pytestmark = pytest.mark.usefixtures("one_thread")


class Recording:
    """A backbone reference for build_model that also runs the untouched network once."""

    def __init__(self, name: str, x: torch.Tensor):
        self.resolved = resolved(name)
        self.x = x

    def build(self, weights):
        backbone = self.resolved.build(weights=weights)
        network = backbone.model.eval()
        with torch.no_grad():
            self.logits = network(self.x)
        self.classifier = network.get_submodule(backbone.classifier)
        self.family = type(network).__name__
        return backbone


def test_every_classification_model_is_registered():
    registered = {c.name for c in get_registry().backbones.list("torchvision/*")}
    assert registered == {f"torchvision/{name}" for name in NAMES}
    assert len(SMALLEST) >= 18  # resnet, vgg, mobilenet v2/v3, efficientnet v1/v2, convnext, vit, swin, ...


@pytest.mark.parametrize("name", SMALLEST)
def test_smallest_member_of_each_family_builds_and_splits_exactly(name):
    torch.manual_seed(0)
    size = INPUT.get(name, 64)
    x = torch.randn(2, 3, size, size)
    reference = Recording(f"torchvision/{name}", x)
    built = build_model(reference, "none", HeadSpec(), num_classes=7)
    model = built.model.eval()
    assert reference.family in FAMILIES, f"{name} fell back to the one-stage split"
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        features = model.forward_stages(x)
    assert features.shape == (2, model.num_features)
    if isinstance(reference.classifier, nn.Linear):
        # the old classifier on our stages' output gives the original network's logits: the cut is exact
        torch.testing.assert_close(reference.classifier(features), reference.logits, atol=1e-4, rtol=1e-4)
    assert len(model.stages) >= 4 and model.num_groups >= 5  # stem, stages..., head
    ends = model.stage_group_end()
    assert ends == sorted(ends) and ends[-1] == model.num_groups - 1


def test_unknown_family_runs_whole_without_its_classifier():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
            self.last = nn.Linear(8, 5)

        def forward(self, x):
            return self.last(self.body(x))

    network = Odd().eval()
    x = torch.randn(2, 3, 16, 16)
    expected = network.body(x)
    classifier, splitter = family_of(network)
    assert classifier == "last"
    split = splitter(network)
    assert split.num_features == 8 and len(split.stages) == 1
    model = TransferModel(split, nn.Identity()).eval()
    torch.testing.assert_close(model(x), expected)


def test_weights_choice_and_data_config_follow_the_weights_api():
    v1 = tvb.choose_weights("resnet50", "IMAGENET1K_V1")
    assert v1 is torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    assert tvb.choose_weights("resnet50", "ResNet50_Weights.IMAGENET1K_V2").name == "IMAGENET1K_V2"
    assert tvb.choose_weights("resnet50", "pretrained") is torchvision.models.ResNet50_Weights.DEFAULT
    assert tvb.choose_weights("resnet50", "none") is None
    old, new = tvb.data_config(v1), tvb.data_config(torchvision.models.ResNet50_Weights.IMAGENET1K_V2)
    assert old.input_size == new.input_size == (3, 224, 224)
    assert old.crop_pct == round(224 / 256, 4) and new.crop_pct == round(224 / 232, 4)
    b3 = tvb.data_config(torchvision.models.EfficientNet_B3_Weights.DEFAULT)
    assert b3.input_size == (3, 300, 300) and b3.interpolation == "bicubic"
    assert b3.mean == (0.485, 0.456, 0.406) and b3.std == (0.229, 0.224, 0.225)


def test_unknown_weights_name_lists_the_real_ones():
    with pytest.raises(WeightsError) as info:
        tvb.choose_weights("resnet50", "IMAGENET1K_V9")
    text = str(info.value)
    assert "torchvision/resnet50 has no weights named 'IMAGENET1K_V9'" in text
    assert "'IMAGENET1K_V1'" in text and "'IMAGENET1K_V2'" in text and "'none'" in text


def test_options_are_per_family_and_reach_the_network():
    with pytest.raises(ValidationError, match="dropout"):
        resolved("torchvision/resnet18", dropout=0.1)
    backbone = resolved("torchvision/alexnet", dropout=0.25).build(weights="none")
    assert [m.p for m in backbone.model.classifier if isinstance(m, nn.Dropout)] == [0.25, 0.25]
    backbone = resolved("torchvision/efficientnet_b0", stochastic_depth_prob=0.05).build(weights="none")
    depths = [m.p for m in backbone.model.modules() if type(m).__name__ == "StochasticDepth"]
    assert depths and max(depths) < 0.05


def test_listing_info_is_cheap_and_comes_from_the_weights_meta():
    info = get_registry().backbones["torchvision/resnet50"].info()
    assert info["weights"] == "download" and info["params"] == 25557032 and info["input_size"] == 224
    assert info["sources"] == [{"url": torchvision.models.ResNet50_Weights.DEFAULT.url}]
