"""tlzoo.data.pil_ops against torchvision.transforms: the same tensors, bit for bit, and the same reprs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from tlzoo.data import pil_ops
from tlzoo.data.transforms import build_eval_transform
from tlzoo.model.backbone import DataConfig


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return image.convert(mode)


SIZES = [(300, 200), (200, 300), (256, 256), (37, 91), (20, 14), (224, 224)]
INTERPOLATIONS = ["nearest", "bilinear", "bicubic", "box", "hamming", "lanczos"]


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("resize", [224, 64, (40, 60), (17, 17)])
def test_resize_and_centre_crop_match_torchvision(resize, interpolation):
    crop = (32, 48) if isinstance(resize, int) else resize
    ours = pil_ops.Compose([pil_ops.Resize(resize, interpolation), pil_ops.CenterCrop(crop), pil_ops.ToTensor(),
                            pil_ops.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))])
    theirs = T.Compose([T.Resize(resize, T.InterpolationMode(interpolation)), T.CenterCrop(crop), T.ToTensor(),
                        T.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))])
    assert repr(ours) == repr(theirs)  # the activation cache keys transforms by their repr
    for width, height in SIZES:
        image = noise(width, height)
        assert torch.equal(ours(image), theirs(image)), (width, height)


@pytest.mark.parametrize("crop", [(50, 40), (41, 33), (10, 70), 9])
def test_centre_crop_pads_small_images_as_torchvision_does(crop):
    for mode in ("RGB", "L"):
        image = noise(37, 22, mode)
        ours, theirs = pil_ops.CenterCrop(crop)(image), T.CenterCrop(crop)(image)
        assert ours.size == theirs.size and np.array_equal(np.asarray(ours), np.asarray(theirs)), (crop, mode)


def test_byte_tensors_and_unknown_interpolation():
    image = noise(30, 20)
    ours, theirs = pil_ops.PILToTensor()(image), T.PILToTensor()(image)
    assert ours.dtype == torch.uint8 and torch.equal(ours, theirs)
    assert pil_ops.Resize(8, "random").interpolation == "bilinear"  # timm's 'random' in a pretrained config
    with pytest.raises(TypeError, match="8-bit PIL image"):
        pil_ops.ToTensor()(np.zeros((4, 4, 3)))


def test_eval_transform_equals_torchvisions_recipe():
    config = DataConfig(input_size=(3, 260, 260), mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic",
                        crop_pct=0.875)
    theirs = T.Compose([T.Resize(297, T.InterpolationMode.BICUBIC), T.CenterCrop((260, 260)), T.ToTensor(),
                        T.Normalize(config.mean, config.std)])
    ours = build_eval_transform(config)
    for width, height in SIZES:
        image = noise(width, height)
        assert torch.equal(ours(image), theirs(image))
