"""timm backbones: cheap registration, tags, a spread of families with exact stage splits, the lite0 check."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from conftest import resolved_backbone as resolved
from tlzoo.errors import TlzooError, WeightsError
from tlzoo.model.build import build_model
from tlzoo.spec import HeadSpec
from tlzoo.plugins.timm import backbones as timm_backbones
from tlzoo.plugins.timm.split import LAYOUTS
from tlzoo.registry import UnknownComponent, get_registry

# (model, input side, options, class whose sequential layout it checks or None for the one-stage split)
SPREAD = [
    ("resnet10t", 32, {}, "ResNet"),
    ("resnest14d", 32, {}, "ResNet"),
    ("mnasnet_small", 32, {}, "EfficientNet"),
    ("mobilenetv3_small_050", 32, {}, "MobileNetV3"),
    ("lcnet_035", 32, {}, "MobileNetV3"),
    ("ghostnet_050", 32, {}, "GhostNet"),
    ("convnext_atto", 32, {}, "ConvNeXt"),
    ("davit_tiny", 32, {}, "DaVit"),
    ("edgenext_xx_small", 64, {}, "EdgeNeXt"),
    ("rdnet_tiny", 32, {}, "RDNet"),
    ("maxvit_pico_rw_256", 64, {"img_size": 64}, "MaxxVit"),
    ("resnetv2_18", 32, {}, "ResNetV2"),
    ("starnet_s050", 32, {}, "StarNet"),
    ("focalnet_tiny_srf", 32, {}, "FocalNet"),
    ("repvgg_a0", 32, {}, "ByobNet"),
    ("fastvit_t8", 64, {}, "FastVit"),
    ("nf_regnet_b0", 32, {}, "NormFreeNet"),
    ("regnetx_002", 32, {}, "RegNet"),
    ("cs3darknet_focus_s", 64, {}, "CspNet"),
    ("mambaout_femto", 64, {}, "MambaOut"),
    ("poolformer_s12", 32, {}, "MetaFormer"),
    ("inception_next_atto", 32, {}, "MetaNeXt"),
    ("ese_vovnet19b_slim_dw", 32, {}, "VovNet"),
    ("hgnetv2_b0", 32, {}, "HighPerfGpuNet"),
    ("repvit_m0_9", 64, {}, "RepVit"),
    ("rexnet_100", 32, {}, "RexNet"),
    ("dla46_c", 32, {}, "DLA"),
    ("xception41p", 64, {}, "XceptionAligned"),
    ("mixer_s32_224", 64, {"img_size": 64}, "MlpMixer"),
    ("swin_tiny_patch4_window7_224", 64, {"img_size": 64}, "SwinTransformer"),
    ("tiny_vit_5m_224", 64, {}, "TinyVit"),
    ("vit_tiny_patch16_224", 32, {"img_size": 32}, "VisionTransformer"),
    ("densenet121", 32, {}, None),
    ("dpn48b", 32, {}, None),
    ("selecsls42b", 32, {}, None),
    ("hrnet_w18_small", 64, {}, None),
    ("levit_128s", 64, {"img_size": 64}, None),
    ("xcit_nano_12_p16_224", 32, {"img_size": 32}, None),
    ("pvt_v2_b0", 32, {}, None),
    ("efficientvit_b0", 32, {}, None),
    ("eva02_tiny_patch14_224", 28, {"img_size": 28}, None),
    ("convit_tiny", 32, {"img_size": 32}, None),
    ("fasternet_t0", 32, {}, None),
    ("repghostnet_050", 32, {}, None),
    ("legacy_seresnet18", 32, {}, None),
]


pytestmark = pytest.mark.usefixtures("one_thread")


class Recording:
    """A backbone reference for build_model that also keeps the untouched model's pre-logits features."""

    def __init__(self, name: str, options: dict, x: torch.Tensor):
        self.resolved = resolved(name, **options)
        self.x = x

    def build(self, weights):
        backbone = self.resolved.build(weights=weights)
        network = backbone.model.eval()
        with torch.no_grad():
            self.features = network.forward_head(network.forward_features(self.x), pre_logits=True)
        self.family = type(network).__name__
        return backbone


def test_every_timm_model_is_registered_without_building_one(monkeypatch):
    def no_building(*args, **kwargs):
        raise AssertionError("registration or listing built a model")

    monkeypatch.setattr(timm, "create_model", no_building)
    catalog = get_registry().backbones
    names = {c.name for c in catalog.list("timm/*")}
    assert names == {f"timm/{name}" for name in timm.list_models()}
    info = catalog["timm/resnet10t"].info()
    default = {
        "weights": "download", "input_size": 176,
        "sources": [{"hf": "timm/resnet10t.c3_in1k", "files": ["model.safetensors", "pytorch_model.bin"]},
                    {"url": timm.models.get_pretrained_cfg("resnet10t").url}],
    }
    # the pretrained tags are listed as variants (one here), each with its own sources
    assert {k: v for k, v in info.items() if k != "variants"} == default
    assert info["variants"] == [{"name": "timm/resnet10t.c3_in1k", **default}]
    assert catalog["timm/botnet50ts_256"].info()["weights"] == "none"


def test_the_spread_covers_forty_families_and_every_layout():
    families = {timm.models._registry._model_to_module[name] for name, *_ in SPREAD}
    assert len(families) >= 40
    assert {layout for *_, layout in SPREAD if layout} == set(LAYOUTS)


@pytest.mark.parametrize("name,size,options,layout", SPREAD, ids=[row[0] for row in SPREAD])
def test_family_builds_with_seven_classes_and_its_stages_are_exact(name, size, options, layout):
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    reference = Recording(f"timm/{name}", options, x)
    model = build_model(reference, "none", HeadSpec(), num_classes=7).model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        features = model.forward_stages(x)
    torch.testing.assert_close(features, reference.features, atol=1e-4, rtol=1e-4)
    if layout:
        assert reference.family == layout
        assert len(model.stages) >= 4, "the sequential layout did not apply"
        assert model.num_groups == len([s for s in model.stages if list(s.parameters())]) + 1
    else:
        assert reference.family not in LAYOUTS and len(model.stages) == 1
    assert model.num_groups >= 3


def test_tagged_names_resolve_and_bad_ones_do_not():
    catalog = get_registry().backbones
    tagged = catalog.get_component("timm/resnet10t.c3_in1k")
    assert tagged.name == "timm/resnet10t.c3_in1k" and tagged.plugin == "timm_backbones"
    for bad in ("timm/resnet10t.no_such_tag", "timm/no_such_model", "resnet10t.c3_in1k"):
        with pytest.raises(UnknownComponent):
            catalog.get_component(bad)


def test_weights_may_name_a_tag():
    assert timm_backbones.choose_weights("resnet10t", "c3_in1k") == ("resnet10t.c3_in1k", True)
    assert timm_backbones.choose_weights("resnet10t.c3_in1k", "pretrained") == ("resnet10t.c3_in1k", True)
    assert timm_backbones.choose_weights("resnet10t", "none") == ("resnet10t", False)
    with pytest.raises(WeightsError, match="(?s)has no weights named 'bogus'.*'c3_in1k'"):
        timm_backbones.choose_weights("resnet10t", "bogus")
    with pytest.raises(WeightsError, match="names the weights 'c3_in1k' and backbone.weights names 'other'"):
        timm_backbones.choose_weights("resnet10t.c3_in1k", "other")


def test_an_option_the_model_does_not_take_is_a_user_error():
    with pytest.raises(TlzooError) as info:
        resolved("timm/resnet10t", img_size=64).build(weights="none")
    assert "timm/resnet10t does not take" in str(info.value) and "img_size" in str(info.value)


def test_data_config_comes_from_the_pretrained_config():
    backbone = resolved("timm/resnet10t", drop_rate=0.1).build(weights="none")
    config = backbone.data_config
    assert config.input_size == (3, 176, 176) and config.interpolation == "bicubic"
    assert config.mean == (0.485, 0.456, 0.406) and config.crop_pct == 0.875
    assert backbone.classifier == "fc" and backbone.model.drop_rate == 0.1
    vit = resolved("timm/vit_tiny_patch16_224", img_size=32).build(weights="none")
    assert vit.data_config.input_size == (3, 32, 32) and vit.data_config.mean == (0.5, 0.5, 0.5)


def preprocess(array: np.ndarray, config) -> torch.Tensor:
    """Resize the short side to size / crop_pct, centre-crop, normalise: the DataConfig recipe."""
    image = Image.fromarray(array).convert("RGB")
    size = config.input_size[-1]
    scale = (size / config.crop_pct) / min(image.size)
    resample = Image.BICUBIC if config.interpolation == "bicubic" else Image.BILINEAR
    image = image.resize((round(image.width * scale), round(image.height * scale)), resample)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(config.mean).view(3, 1, 1)) / torch.tensor(config.std).view(3, 1, 1)


def test_shipped_lite0_recognises_imagenet_photos():
    from skimage import data
    from torchvision.models import ResNet18_Weights

    categories = ResNet18_Weights.DEFAULT.meta["categories"]
    built = build_model(resolved("efficientnet_lite0"), "pretrained", HeadSpec(), num_classes=1000)
    assert built.weights.startswith("shipped:")
    model = built.model.eval()
    x = torch.stack([preprocess(data.chelsea(), built.data_config), preprocess(data.coffee(), built.data_config)])
    with torch.no_grad():
        top1 = model(x).argmax(1).tolist()
    assert categories[top1[0]] in ("tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat")
    assert categories[top1[1]] == "espresso"
    assert len(model.stages) == 9  # stem, seven block stages, conv head + pooling
