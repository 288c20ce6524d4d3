"""Image transforms: training augmentation as a list of named ops, evaluation from the backbone.

`data.augment` is a preset name (none, light, rotate_flip, strong) or a list of ops,
each `{"op": NAME, ...parameters}`; every op is a small pydantic model in
tlzoo.data.augment_ops. A train pipeline runs in three parts:

1. image ops (PIL): resize, crops, rotation, flips, colour, auto-augment, in list order;
2. ToTensor, then Normalize with the backbone's mean/std unless the list has a
   `normalize` op (placed where it stands among the tensor ops);
3. tensor ops (normalize, random_erasing), which must come after every image op.

If no op fixes the output size, the evaluation resize and centre crop are put
first, so every sample of a batch has the backbone's input size.

Evaluation (and `augment: "none"`) follows the backbone's pretrained DataConfig:
resize the shorter side to size / crop_pct with its interpolation, centre crop
to size, normalize with its mean/std (the timm convention).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
from typing import Any

from pydantic import ValidationError

from tlzoo.data import pil_ops
from tlzoo.data.augment_ops import OPS, Normalize, Op
from tlzoo.data.decode_size import CropArea, FixedSize, ShorterSide, SizeNeed
from tlzoo.model.backbone import DataConfig
from tlzoo.errors import SpecError

__all__ = ["validate_augment", "build_train_transform", "build_eval_transform", "is_deterministic",
           "Pipeline", "PRESETS", "OPS"]



PRESETS: dict[str, list[dict]] = {
    "none": [],  # the evaluation transform: resize, centre crop, normalize
    "light": [{"op": "random_resized_crop", "scale": [0.5, 1.0]}, {"op": "horizontal_flip"}],
    # a fixed 300x300 resize, rotation up to 45 degrees, a 224 centre crop, both flips and 10 % grayscale
    # (torchvision defaults); it normalizes as the backbone expects, like evaluation
    "rotate_flip": [
        {"op": "resize", "size": [300, 300]},
        {"op": "random_rotation", "degrees": 45},
        {"op": "center_crop", "size": 224},
        {"op": "horizontal_flip", "p": 0.5},
        {"op": "vertical_flip", "p": 0.5},
        {"op": "grayscale", "p": 0.1},
        {"op": "normalize"},
    ],
    "strong": [
        {"op": "random_resized_crop"},
        {"op": "horizontal_flip"},
        {"op": "trivial_augment"},
        {"op": "random_erasing", "p": 0.25},
    ],
}


# older preset names, still read: run directories written before a rename name them in spec.json (resume)
PRESET_ALIASES = {"seed001": "rotate_flip"}


def preset_ops(name: str) -> list[dict] | None:
    """The ops of a preset (or an older name of one); None for an unknown name."""
    return PRESETS.get(PRESET_ALIASES.get(name, name))


def _by_word(name: str) -> list[str]:
    """'rotate' -> random_rotation: match against each word of an op's name."""
    return [op for op in OPS if any(difflib.SequenceMatcher(None, name.lower(), word).ratio() >= 0.7
                                    for word in op.split("_"))][:3]


def parse_ops(items: Any) -> tuple[list[Op], list[tuple[str, str]]]:
    """Validate a list of op dicts: (ops, problems as (location suffix like '[2].degrees', message))."""
    from tlzoo.registry.catalog import closest

    if not isinstance(items, list):
        return [], [("", "give a preset name or a list of {\"op\": ...} objects")]
    ops: list[Op] = []
    problems: list[tuple[str, str]] = []
    first_tensor_op: int | None = None
    for index, item in enumerate(items):
        where = f"[{index}]"
        if not isinstance(item, dict):
            problems.append((where, "each op is an object such as {\"op\": \"horizontal_flip\", \"p\": 0.5}"))
            continue
        name = item.get("op")
        if not isinstance(name, str) or not name:
            problems.append((f"{where}.op", f"missing op name; ops: {', '.join(OPS)}"))
            continue
        if name not in OPS:
            close = closest(name, list(OPS)) or _by_word(name)
            hint = f" Did you mean: {', '.join(close)}?" if close else f" Ops: {', '.join(OPS)}."
            problems.append((f"{where}.op", f"unknown augmentation op {name!r}.{hint}"))
            continue
        try:
            op = OPS[name].model_validate(item)
        except ValidationError as exc:
            for error in exc.errors():
                loc = ".".join(str(part) for part in error["loc"])
                message = error["msg"].removeprefix("Value error, ")
                problems.append((f"{where}.{loc}" if loc else where, message))
            continue
        if op.stage == "tensor" and first_tensor_op is None:
            first_tensor_op = index
        elif op.stage == "image" and first_tensor_op is not None:
            problems.append((f"{where}.op", f"{name!r} works on images; put it before the tensor op at "
                             f"[{first_tensor_op}] ({items[first_tensor_op]['op']})"))
            continue
        ops.append(op)
    return ops, problems


# ops whose output depends on the input image only (the resize and centre crop of every pipeline are these)
DETERMINISTIC_GEOMETRY = (pil_ops.Resize, pil_ops.CenterCrop)


def fixed_size(op) -> tuple[int, int] | None:
    """(height, width) every output of `op` has, whatever the input; None if it varies."""
    size = getattr(op, "size", None)
    if isinstance(op, pil_ops.CenterCrop):
        return tuple(size)
    if isinstance(op, pil_ops.Resize) and isinstance(size, tuple) and len(size) == 2:
        return size
    return None


def size_need(op) -> SizeNeed | None:
    """What a resize or a random resized crop needs of the image it gets; None for any other op."""
    vision = sys.modules.get("torchvision.transforms")  # an op can be torchvision's only once it is imported
    if vision is not None and isinstance(op, vision.RandomResizedCrop):
        height, width = op.size
        return CropArea(width, height, tuple(op.scale), tuple(op.ratio))
    if isinstance(op, pil_ops.Resize):
        size = [op.size] if isinstance(op.size, int) else list(op.size)
        return ShorterSide(size[0]) if len(size) == 1 else FixedSize(size[1], size[0])
    return None


class Pipeline:
    """image -> tensor in two parts: `image_part` (PIL -> PIL) and `tensor_part` (PIL -> normalized tensor).

    Kept apart so a cache of decoded or geometry-transformed images can reuse the second part.
    """

    def __init__(self, image_part: pil_ops.Compose, tensor_part: pil_ops.Compose):
        self.image_part = image_part
        self.tensor_part = tensor_part

    def __call__(self, image):
        return self.tensor_part(self.image_part(image))

    def __repr__(self) -> str:
        return f"Pipeline(image_part={self.image_part!r}, tensor_part={self.tensor_part!r})"

    def split_leading_geometry(self) -> tuple[list, tuple[int, int] | None, Pipeline]:
        """(leading ops, their output (h, w) or None, the rest as a Pipeline).

        The leading part is the longest run of deterministic geometry ops that ends
        at a fixed size; it is empty when the pipeline starts with anything else.
        """
        ops = list(self.image_part.transforms)
        cut, size = 0, None
        for index, op in enumerate(ops):
            if not isinstance(op, DETERMINISTIC_GEOMETRY):
                break
            if fixed_size(op) is not None:
                cut, size = index + 1, fixed_size(op)
        return ops[:cut], size, Pipeline(pil_ops.Compose(ops[cut:]), self.tensor_part)

    def decode_need(self) -> SizeNeed | None:
        """How small an image may be decoded for this pipeline (tlzoo.data.decode_size): what its first op
        takes from the image; None (decode at full size) when that op needs every pixel (a crop, a rotation)."""
        ops = list(self.image_part.transforms)
        return size_need(ops[0]) if ops else None

    def byte_split(self) -> tuple[Pipeline, tuple, tuple] | None:
        """(this pipeline ending in an 8-bit tensor, mean, std) when its tensor part is exactly ToTensor then
        Normalize, so that x / 255, - mean, / std on a batch finish it bit for bit; else None."""
        steps = list(self.tensor_part.transforms)
        if len(steps) != 2 or type(steps[0]) is not pil_ops.ToTensor or type(steps[1]) is not pil_ops.Normalize:
            return None
        return Pipeline(self.image_part, pil_ops.PILToTensor()), steps[1].mean, steps[1].std


def validate_augment(value: Any) -> list[tuple[str, str]]:
    """Problems in a `data.augment` value as (location suffix, message); [] when valid."""
    from tlzoo.registry.catalog import closest

    if isinstance(value, str):
        if preset_ops(value) is not None:
            return []
        close = closest(value, list(PRESETS))
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return [("", f"unknown augmentation preset {value!r}.{hint} Presets: {', '.join(PRESETS)}; "
                     "or give a list of ops such as [{\"op\": \"horizontal_flip\"}]")]
    if not isinstance(value, list):
        return [("", "give a preset name or a list of {\"op\": ...} objects")]
    _, problems = parse_ops(value)
    return problems


def resolve_ops(augment: str | list) -> list[Op]:
    """The op models for a preset name or a list; raises SpecError on bad input."""
    listed = preset_ops(augment) if isinstance(augment, str) else augment
    ops, problems = parse_ops(listed) if listed is not None else ([], validate_augment(augment))
    if problems:
        raise SpecError([("data.augment" + loc, msg) for loc, msg in problems], "data.augment")
    return ops


def is_deterministic(augment: str | list) -> bool:
    """True when the training pipeline has no random op (one cached view per image is then exact)."""
    return not any(op.random for op in resolve_ops(augment))


def explicit_normalization(augment: str | list) -> tuple[tuple, tuple] | None:
    """(mean, std) of a `normalize` op that states its own statistics, else None.

    The run then evaluates and predicts with these too: features normalized one
    way in training and another at test time cost accuracy silently.
    """
    for op in resolve_ops(augment):
        if isinstance(op, Normalize) and (op.mean is not None or op.std is not None):
            return op.mean, op.std
    return None


def with_stated_normalization(data_config: DataConfig, augment: str | list) -> DataConfig:
    """`data_config` with the mean/std that a `normalize` op of `augment` states (evaluation and prediction
    then use them too); the same object when no op states any."""
    stated = explicit_normalization(augment)
    if stated is None:
        return data_config
    mean, std = stated
    return dataclasses.replace(data_config, mean=tuple(mean or data_config.mean), std=tuple(std or data_config.std))


def build_train_transform(augment: str | list, data_config: DataConfig) -> Pipeline:
    """The training pipeline for `data.augment` on a backbone with `data_config`."""
    ops = resolve_ops(augment)
    image_ops = [op for op in ops if op.stage == "image"]
    tensor_ops = [op for op in ops if op.stage == "tensor"]
    image_part = [op.build(data_config) for op in image_ops]
    if not any(op.fixes_size for op in image_ops):
        image_part = _eval_geometry(data_config) + image_part
    tensor_part = [pil_ops.ToTensor()]
    if not any(isinstance(op, Normalize) for op in tensor_ops):
        tensor_part.append(pil_ops.Normalize(data_config.mean, data_config.std))
    tensor_part += [op.build(data_config) for op in tensor_ops]
    return Pipeline(pil_ops.Compose(image_part), pil_ops.Compose(tensor_part))


def build_eval_transform(data_config: DataConfig) -> Pipeline:
    """Resize to size / crop_pct, centre crop to size, normalize: the backbone's pretrained recipe."""
    return Pipeline(pil_ops.Compose(_eval_geometry(data_config)),
                    pil_ops.Compose([pil_ops.ToTensor(), pil_ops.Normalize(data_config.mean, data_config.std)]))


def _eval_geometry(data_config: DataConfig) -> list:
    height, width = data_config.input_size[1:]
    crop_pct = data_config.crop_pct or 1.0
    mode = data_config.interpolation  # timm's 'random' falls back to bilinear (pil_ops.interpolation_name)
    if height == width:
        resize = pil_ops.Resize(math.floor(height / crop_pct), interpolation=mode)
    else:
        resize = pil_ops.Resize((math.floor(height / crop_pct), math.floor(width / crop_pct)), interpolation=mode)
    return [resize, pil_ops.CenterCrop((height, width))]

