"""Augmentation ops, presets, validation messages and the backbone-driven evaluation transform."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from tlzoo.data import pil_ops
from tlzoo.model.backbone import DataConfig
from tlzoo.errors import SpecError
from tlzoo.spec import resolve_spec
from tlzoo.data.transforms import (OPS, PRESETS, build_eval_transform, build_train_transform, explicit_normalization,
                                   is_deterministic, validate_augment)
from tlzoo.registry import get_registry

IMAGENET = DataConfig()
SMALL = DataConfig(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), interpolation="bicubic",
                   crop_pct=0.8)


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def rotate_flip_in_torchvision() -> T.Compose:
    """The rotate_flip preset written with torchvision (seed 001's training transform, verbatim)."""
    return T.Compose([
        T.Resize([300, 300]),
        T.RandomRotation(45),
        T.CenterCrop(224),
        T.RandomHorizontalFlip(p=0.5),
        T.RandomVerticalFlip(p=0.5),
        T.RandomGrayscale(p=0.1),
        T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])


def test_rotate_flip_preset_equals_the_torchvision_pipeline():
    # the seed's Normalize values are its ResNet's statistics; the preset takes the backbone's
    ours = build_train_transform("rotate_flip", DataConfig(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
    theirs = rotate_flip_in_torchvision()
    image = noise(120, 90)
    outputs = []
    for seed in range(6):
        torch.manual_seed(seed)
        mine = ours(image)
        torch.manual_seed(seed)
        assert torch.equal(mine, theirs(image)), seed
        outputs.append(mine)
    assert mine.shape == (3, 224, 224)
    assert not all(torch.equal(outputs[0], other) for other in outputs[1:])  # it really is random


def test_rotate_flip_preset_normalizes_as_the_backbone_does():
    lite = DataConfig(mean=(0.5,) * 3, std=(0.5,) * 3)
    normalize = build_train_transform("rotate_flip", lite).tensor_part.transforms[-1]
    assert isinstance(normalize, pil_ops.Normalize) and normalize.mean == (0.5,) * 3 and normalize.std == (0.5,) * 3
    assert explicit_normalization("rotate_flip") is None


def test_stated_normalization_is_reported_for_evaluation_too():
    ops = [{"op": "horizontal_flip"}, {"op": "normalize", "mean": [0.4, 0.4, 0.4]}]
    assert explicit_normalization(ops) == ((0.4, 0.4, 0.4), None)
    assert explicit_normalization("light") is None


def test_eval_transform_follows_the_data_config():
    transform = build_eval_transform(SMALL)
    resize, crop = transform.image_part.transforms
    assert resize.size == 40 and resize.interpolation == "bicubic"  # floor(32 / 0.8)
    assert crop.size == (32, 32)
    out = transform(Image.new("RGB", (70, 50), (255, 0, 128)))
    assert out.shape == (3, 32, 32)
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - 0.5) / 0.25
    assert torch.allclose(out[:, 16, 16], expected, atol=1e-6)


def test_eval_transform_non_square_input():
    config = DataConfig(input_size=(3, 48, 32), crop_pct=1.0)
    assert build_eval_transform(config)(noise(100, 100)).shape == (3, 48, 32)


def test_none_preset_is_the_eval_transform():
    image = noise(60, 45)
    assert torch.equal(build_train_transform("none", SMALL)(image), build_eval_transform(SMALL)(image))
    assert is_deterministic("none")


def test_a_list_without_a_size_op_gets_the_eval_geometry_first():
    transform = build_train_transform([{"op": "horizontal_flip", "p": 1.0}], SMALL)
    image = noise(60, 45)
    flipped = build_eval_transform(SMALL)(image).flip(-1)
    assert torch.equal(transform(image), flipped)


def test_backbone_statistics_unless_an_op_says_otherwise():
    white = Image.new("RGB", (40, 40), (255, 255, 255))
    default = build_train_transform([{"op": "center_crop"}], SMALL)(white)
    assert torch.allclose(default, torch.full((3, 32, 32), 2.0))  # (1 - 0.5) / 0.25
    plain = build_train_transform([{"op": "center_crop"}, {"op": "normalize", "mean": [0, 0, 0], "std": [1, 1, 1]}],
                                  SMALL)(white)
    assert torch.allclose(plain, torch.ones(3, 32, 32))


EXAMPLES = {
    "resize": {"size": [32, 32]},
    "center_crop": {},
    "random_crop": {"padding": 2},
    "random_resized_crop": {"scale": [0.3, 1.0]},
    "random_rotation": {"degrees": 30},
    "horizontal_flip": {},
    "vertical_flip": {},
    "grayscale": {"p": 1.0},
    "color_jitter": {"brightness": 0.3, "hue": 0.1},
    "gaussian_blur": {"kernel_size": 3},
    "trivial_augment": {},
    "rand_augment": {"num_ops": 2, "magnitude": 9},
    "random_erasing": {"p": 1.0},
    "normalize": {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]},
}


def test_every_op_has_an_example():
    assert set(EXAMPLES) == set(OPS)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_op_builds_and_gives_the_input_size(name):
    op = {"op": name, **EXAMPLES[name]}
    resize, crop = {"op": "resize", "size": [40, 40]}, {"op": "center_crop"}
    ops = [resize, op, crop] if OPS[name].stage == "image" else [resize, crop, op]
    assert validate_augment(ops) == []
    torch.manual_seed(0)
    out = build_train_transform(ops, SMALL)(noise(50, 40))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    if name == "grayscale":
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


@pytest.mark.parametrize("augment, expected", [
    ("none", True), ("light", False), ("rotate_flip", False), ("strong", False),
    ([{"op": "resize", "size": [40, 40]}, {"op": "center_crop", "size": 32}], True),
    ([{"op": "horizontal_flip", "p": 1.0}, {"op": "vertical_flip", "p": 0.0}], True),
    ([{"op": "horizontal_flip"}], False),
    ([{"op": "random_rotation", "degrees": 0}], True),
    ([{"op": "random_rotation", "degrees": [10, 10]}], True),
    ([{"op": "random_rotation", "degrees": 5}], False),
    ([{"op": "color_jitter"}], True),
    ([{"op": "color_jitter", "contrast": 0.2}], False),
    ([{"op": "random_erasing", "p": 0.0}], True),
    ([{"op": "random_crop"}], False),
    ([{"op": "trivial_augment"}], False),
])
def test_is_deterministic(augment, expected):
    assert is_deterministic(augment) is expected


def test_deterministic_pipelines_really_are():
    image = noise(64, 48)
    for augment in ([{"op": "resize", "size": [40, 40]}, {"op": "horizontal_flip", "p": 1.0}], "none"):
        assert is_deterministic(augment)
        transform = build_train_transform(augment, SMALL)
        torch.manual_seed(1)
        first = transform(image)
        torch.manual_seed(2)
        assert torch.equal(first, transform(image))


@pytest.mark.parametrize("augment, loc, fragment", [
    ("lite", "", "Did you mean: light?"),
    (7, "", "preset name or a list"),
    ([{"op": "rotate", "degrees": 4}], "[0].op", "Did you mean: random_rotation?"),
    ([{"op": "flip"}], "[0].op", "Did you mean: horizontal_flip, vertical_flip?"),
    ([{"degrees": 4}], "[0].op", "missing op name"),
    (["horizontal_flip"], "[0]", "each op is an object"),
    ([{"op": "random_rotation"}], "[0].degrees", "Field required"),
    ([{"op": "resize", "size": [300, 300]}, {"op": "random_rotation", "degrees": -45}], "[1].degrees", ">= 0"),
    ([{"op": "random_rotation", "degrees": [30, -30]}], "[0].degrees", "must not exceed"),
    ([{"op": "horizontal_flip", "p": 1.5}], "[0].p", "less than or equal to 1"),
    ([{"op": "horizontal_flip", "prob": 0.5}], "[0].prob", "Extra inputs are not permitted"),
    ([{"op": "random_resized_crop", "scale": [0.5, 1.5]}], "[0].scale", "(0, 1]"),
    ([{"op": "gaussian_blur", "kernel_size": 4}], "[0].kernel_size", "odd"),
    ([{"op": "rand_augment", "magnitude": 31}], "[0].magnitude", "below num_magnitude_bins"),
    ([{"op": "normalize", "mean": [0, 0, 0], "std": [1, 0, 1]}], "[0].std", "> 0"),
    ([{"op": "random_erasing"}, {"op": "center_crop"}], "[1].op", "put it before the tensor op at [0]"),
    ([{"op": "resize", "size": [100000, 100000]}], "[0].size", "resize: size [100000, 100000] is over the cap"),
    ([{"op": "random_resized_crop", "size": 5000}], "[0].size", "random_resized_crop: size 5000 is over the cap"),
    ([{"op": "random_crop", "padding": 10**6}], "[0].padding", "random_crop: padding 1000000 is over the cap"),
])
def test_validation_problems_have_locations(augment, loc, fragment):
    problems = validate_augment(augment)
    assert [p for p in problems if p[0] == loc and fragment in p[1]], problems


def test_seed001_still_reads_as_rotate_flip_for_older_run_directories():
    config = DataConfig(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert validate_augment("seed001") == []
    assert repr(build_train_transform("seed001", config)) == repr(build_train_transform("rotate_flip", config))
    assert "seed001" not in PRESETS  # listed and documented under its new name only


def test_presets_are_valid():
    for name, ops in PRESETS.items():
        assert validate_augment(name) == [] and validate_augment(ops) == [], name


def test_spec_reports_augment_problems_with_dotted_locations(tmp_path):
    raw = {"data": {"reader": {"name": "imagefolder", "options": {"root": "."}},
                    "augment": [{"op": "horizontal_flip"}, {"op": "random_rotation", "degrees": -3},
                                {"op": "colour_jitter"}]}}
    with pytest.raises(SpecError) as caught:
        resolve_spec(raw, get_registry(), tmp_path)
    locations = [loc for loc, _ in caught.value.problems]
    assert locations == ["data.augment[1].degrees", "data.augment[2].op"]
    assert "Did you mean: color_jitter?" in str(caught.value)


def test_building_a_bad_augment_raises_spec_error():
    with pytest.raises(SpecError, match=r"data.augment\[0\].op"):
        build_train_transform([{"op": "nope"}], SMALL)


def test_train_transform_pickles_for_worker_processes():
    transform = build_train_transform("strong", SMALL)
    copy = pickle.loads(pickle.dumps(transform))
    image = noise(50, 50)
    torch.manual_seed(5)
    first = transform(image)
    torch.manual_seed(5)
    assert torch.equal(first, copy(image))


def test_augment_sizes_up_to_the_cap_are_fine():
    assert validate_augment([{"op": "resize", "size": [4096, 16]}, {"op": "center_crop", "size": 16}]) == []


def test_a_transform_out_of_memory_does_not_blame_the_file(tmp_path):
    from tlzoo.data.dataset import ImageDataset
    from tlzoo.data.sample_errors import SampleError

    Image.new("RGB", (8, 6)).save(tmp_path / "ok.png")

    def exhausted(image):  # what a transform asking for a huge canvas raises
        raise MemoryError()

    with pytest.raises(SampleError, match="transform ran out of memory on a 8x6 image") as caught:
        ImageDataset([(tmp_path / "ok.png", 0)], exhausted)[0]
    assert "lower the sizes in data.augment" in str(caught.value)
    assert "fix or remove the file" not in str(caught.value)
