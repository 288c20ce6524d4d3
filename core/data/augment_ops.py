"""The augmentation ops of `data.augment`: one small pydantic model per op, and the presets.

Parameters and defaults mirror torchvision's transform of the same purpose, so
a torchvision pipeline translates one op at a time (Resize([300,300]) is
{"op": "resize", "size": [300, 300]}). A `size` left out means the backbone's
input size. Image ops work on PIL images, tensor ops after ToTensor. Resize, centre
crop and normalize are tlzoo.data.pil_ops (evaluation's own, no torchvision); the
random ops import torchvision when they are built.
The presets and list parsing are in tlzoo.data.transforms.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationInfo, field_validator

from tlzoo.data import pil_ops
from tlzoo.model.backbone import DataConfig

Interpolation = Literal["nearest", "bilinear", "bicubic", "box", "hamming", "lanczos"]
# an output side above this asks for gigabytes per image (100000 x 100000 RGB is 30 GB): a spec mistake
MAX_SIDE = 4096
Size = Union[PositiveInt, tuple[PositiveInt, PositiveInt]]
Probability = Field(0.5, ge=0.0, le=1.0, description="probability of applying the op")


def _vision():
    """torchvision.transforms, imported by the random ops only: evaluation and predict never need it."""
    from torchvision import transforms

    return transforms


def _mode(name: str):
    return _vision().InterpolationMode(name)


def _range(value, name: str, low: float | None = None) -> tuple[float, float]:
    pair = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if pair[0] > pair[1]:
        raise ValueError(f"{name}: the first value must not exceed the second, got {list(pair)}")
    if low is not None and pair[0] < low:
        raise ValueError(f"{name} must be >= {low}, got {pair[0]}")
    return pair


class Op(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: ClassVar[str] = "image"  # "image" (PIL) or "tensor"

    @field_validator("size", "padding", "kernel_size", check_fields=False)
    @classmethod
    def _capped(cls, value, info: ValidationInfo):
        sides = [value] if isinstance(value, int) else list(value or [])
        if any(side > MAX_SIDE for side in sides):
            name = cls.model_fields["op"].annotation.__args__[0]
            raise ValueError(f"{name}: {info.field_name} {value if isinstance(value, int) else list(value)} "
                             f"is over the cap of {MAX_SIDE} pixels a side (an image that size needs gigabytes)")
        return value

    @property
    def fixes_size(self) -> bool:
        """True when every output has the same size whatever the input."""
        return False

    @property
    def random(self) -> bool:
        return True

    def build(self, data_config: DataConfig):
        raise NotImplementedError

    @staticmethod
    def _size(size: Size | None, data_config: DataConfig) -> int | tuple[int, int]:
        return tuple(data_config.input_size[1:]) if size is None else size


class Resize(Op):
    op: Literal["resize"]
    size: Size | None = Field(None, description="[h, w] exactly, or an int for the shorter side")
    interpolation: Interpolation = "bilinear"
    antialias: bool = True

    @property
    def fixes_size(self):
        return not isinstance(self.size, int)

    @property
    def random(self):
        return False

    def build(self, data_config):
        return pil_ops.Resize(self._size(self.size, data_config), self.interpolation, antialias=self.antialias)


class CenterCrop(Op):
    op: Literal["center_crop"]
    size: Size | None = None
    fixes_size: ClassVar[bool] = True
    random: ClassVar[bool] = False

    def build(self, data_config):
        return pil_ops.CenterCrop(self._size(self.size, data_config))


class RandomCrop(Op):
    op: Literal["random_crop"]
    size: Size | None = None
    padding: int = Field(0, ge=0)
    pad_if_needed: bool = True
    fill: int = Field(0, ge=0, le=255)
    fixes_size: ClassVar[bool] = True

    def build(self, data_config):
        return _vision().RandomCrop(self._size(self.size, data_config), padding=self.padding or None,
                                    pad_if_needed=self.pad_if_needed, fill=self.fill)


class RandomResizedCrop(Op):
    op: Literal["random_resized_crop"]
    size: Size | None = None
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: Interpolation = "bilinear"
    fixes_size: ClassVar[bool] = True

    @field_validator("scale")
    @classmethod
    def _scale(cls, value):
        _range(value, "scale", low=0.0)
        if not 0.0 < value[1] <= 1.0:
            raise ValueError(f"the largest area fraction must be in (0, 1], got {value[1]}")
        return value

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value):
        _range(value, "ratio")
        if value[0] <= 0:
            raise ValueError(f"ratio must be > 0, got {value[0]}")
        return value

    def build(self, data_config):
        return _vision().RandomResizedCrop(self._size(self.size, data_config), scale=self.scale, ratio=self.ratio,
                                           interpolation=_mode(self.interpolation))


class RandomRotation(Op):
    op: Literal["random_rotation"]
    degrees: float | tuple[float, float] = Field(..., description="d for [-d, d], or [min, max]")
    interpolation: Interpolation = "nearest"
    expand: bool = False
    fill: int = Field(0, ge=0, le=255, description="grey level of the corners the rotation uncovers")

    @field_validator("degrees")
    @classmethod
    def _degrees(cls, value):
        if isinstance(value, (int, float)) and value < 0:
            raise ValueError(f"a single value d means [-d, d], so it must be >= 0, got {value}")
        _range(value, "degrees")
        return value

    @property
    def random(self):
        degrees = self.degrees
        low, high = (-degrees, degrees) if isinstance(degrees, (int, float)) else degrees
        return low != high

    def build(self, data_config):
        return _vision().RandomRotation(self.degrees, interpolation=_mode(self.interpolation), expand=self.expand,
                                        fill=self.fill)


class _Chance(Op):
    p: float = Probability

    @property
    def random(self):
        return 0.0 < self.p < 1.0


class HorizontalFlip(_Chance):
    op: Literal["horizontal_flip"]

    def build(self, data_config):
        return _vision().RandomHorizontalFlip(self.p)


class VerticalFlip(_Chance):
    op: Literal["vertical_flip"]

    def build(self, data_config):
        return _vision().RandomVerticalFlip(self.p)


class Grayscale(_Chance):
    """torchvision's RandomGrayscale: 3 grey channels with probability p."""

    op: Literal["grayscale"]
    p: float = Field(0.1, ge=0.0, le=1.0)

    def build(self, data_config):
        return _vision().RandomGrayscale(self.p)


class ColorJitter(Op):
    op: Literal["color_jitter"]
    brightness: float = Field(0.0, ge=0.0)
    contrast: float = Field(0.0, ge=0.0)
    saturation: float = Field(0.0, ge=0.0)
    hue: float = Field(0.0, ge=0.0, le=0.5)

    @property
    def random(self):
        return any((self.brightness, self.contrast, self.saturation, self.hue))

    def build(self, data_config):
        return _vision().ColorJitter(self.brightness, self.contrast, self.saturation, self.hue)


class GaussianBlur(Op):
    op: Literal["gaussian_blur"]
    kernel_size: PositiveInt = 3
    sigma: float | tuple[float, float] = (0.1, 2.0)

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value):
        if value % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {value}")
        return value

    @field_validator("sigma")
    @classmethod
    def _sigma(cls, value):
        if _range(value, "sigma")[0] <= 0:
            raise ValueError(f"sigma must be > 0, got {value}")
        return value

    @property
    def random(self):
        low, high = _range(self.sigma, "sigma")
        return low != high

    def build(self, data_config):
        return _vision().GaussianBlur(self.kernel_size, self.sigma)


class TrivialAugment(Op):
    op: Literal["trivial_augment"]
    num_magnitude_bins: int = Field(31, ge=2)
    interpolation: Interpolation = "nearest"

    def build(self, data_config):
        return _vision().TrivialAugmentWide(self.num_magnitude_bins, _mode(self.interpolation))


class RandAugment(Op):
    op: Literal["rand_augment"]
    num_ops: int = Field(2, ge=1)
    num_magnitude_bins: int = Field(31, ge=2)
    magnitude: int = Field(9, ge=0)
    interpolation: Interpolation = "nearest"

    @field_validator("magnitude")
    @classmethod
    def _magnitude(cls, value, info: ValidationInfo):
        bins = info.data.get("num_magnitude_bins", 31)
        if value >= bins:
            raise ValueError(f"magnitude must be below num_magnitude_bins ({bins}), got {value}")
        return value

    def build(self, data_config):
        return _vision().RandAugment(self.num_ops, self.magnitude, self.num_magnitude_bins, _mode(self.interpolation))


class RandomErasing(Op):
    op: Literal["random_erasing"]
    stage: ClassVar[str] = "tensor"
    p: float = Probability
    scale: tuple[float, float] = (0.02, 0.33)
    ratio: tuple[float, float] = (0.3, 3.3)
    value: float | Literal["random"] = 0.0

    @field_validator("scale", "ratio")
    @classmethod
    def _ranges(cls, value, info: ValidationInfo):
        return _range(value, info.field_name, low=0.0)

    @property
    def random(self):
        return self.p > 0.0

    def build(self, data_config):
        return _vision().RandomErasing(self.p, self.scale, self.ratio, self.value)


class Normalize(Op):
    """Explicit normalization; without this op the backbone's mean/std are used."""

    op: Literal["normalize"]
    stage: ClassVar[str] = "tensor"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    random: ClassVar[bool] = False

    @field_validator("std")
    @classmethod
    def _std(cls, value):
        if value is not None and min(value) <= 0:
            raise ValueError(f"std values must be > 0, got {list(value)}")
        return value

    def build(self, data_config):
        return pil_ops.Normalize(self.mean or data_config.mean, self.std or data_config.std)


OPS: dict[str, type[Op]] = {
    cls.model_fields["op"].annotation.__args__[0]: cls
    for cls in (Resize, CenterCrop, RandomCrop, RandomResizedCrop, RandomRotation, HorizontalFlip, VerticalFlip,
                Grayscale, ColorJitter, GaussianBlur, TrivialAugment, RandAugment, RandomErasing, Normalize)
}
