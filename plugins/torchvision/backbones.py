"""Every torchvision classification model as a backbone `torchvision/<name>`.

Weights come through torchvision's weights API (`DEFAULT` for "pretrained", or
a named enum such as "IMAGENET1K_V2"); the input size, mean, std and
interpolation come from those weights' transforms. The state dict is found in
the torch hub cache or downloaded (tlzoo.model.hub) and read by tlzoo's safe
loader: the network is built with weights=None and the file loaded into it, so no
private torchvision function is replaced. torchvision is imported inside functions
only: importing it takes seconds.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from tlzoo.registry import Component, hookimpl, names_under

PREFIX = "torchvision/"


class TorchvisionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DropoutOptions(TorchvisionOptions):
    dropout: float | None = Field(None, ge=0, lt=1, description="dropout between the kept fc6 and fc7 layers "
                                                                "(default: torchvision's 0.5)")


class DepthOptions(TorchvisionOptions):
    stochastic_depth_prob: float | None = Field(None, ge=0, lt=1, description="stochastic depth "
                                                                              "(default: torchvision's for this model)")


class TransformerOptions(TorchvisionOptions):
    dropout: float | None = Field(None, ge=0, lt=1, description="dropout inside the blocks (default: 0)")
    attention_dropout: float | None = Field(None, ge=0, lt=1, description="dropout on attention weights (default: 0)")


def options_for(name: str) -> type[TorchvisionOptions]:
    """The options a family takes that still matter once its classifier is gone."""
    if name == "alexnet" or name.startswith("vgg"):
        return DropoutOptions
    if name.startswith(("efficientnet", "convnext")):
        return DepthOptions
    if name.startswith(("vit_", "swin_")):
        return TransformerOptions
    return TorchvisionOptions


def no_weights_kwargs(name: str) -> dict:
    """GoogLeNet/Inception: no auxiliary heads to build, and the explicit init that silences their warning."""
    if name in ("googlenet", "inception_v3"):
        return {"aux_logits": False, "init_weights": True}
    return {}


def choose_weights(name: str, weights: str):
    """The weights enum member for "pretrained", a member name, or None for "none"."""
    from torchvision.models import get_model_weights

    from tlzoo.errors import WeightsError

    enum = get_model_weights(name)
    if weights == "none":
        return None
    if weights == "pretrained":
        return enum.DEFAULT
    member = weights.rsplit(".", 1)[-1]  # also accept "ResNet50_Weights.IMAGENET1K_V2"
    if member in enum.__members__:
        return enum[member]
    names = ", ".join(repr(m) for m in enum.__members__)
    raise WeightsError(f"torchvision/{name} has no weights named {weights!r}",
                       f"use 'pretrained', 'none', one of {names} or {{\"path\": ...}}")


def check_weights(name: str, options, weights: str) -> None:
    """What build would refuse about `weights`, downloading nothing (for `tlzoo validate`): an unknown
    variant, or weights neither in the torch hub cache nor downloadable."""
    from tlzoo.model.hub import check_obtainable

    chosen = choose_weights(name, weights)
    if chosen is not None:
        check_obtainable([{"url": chosen.url}], PREFIX + name)


# What torchvision's builders do with a weights enum besides loading its state dict (they take
# weights=None plus these arguments instead; tlzoo then loads the file itself, through its safe
# loader, from the torch hub cache). tests/test_hub_torchvision.py checks the result against
# torchvision's own pretrained build for each family listed here.
AUX_HEADS = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}  # trained with, dropped after loading
DENSENET_OLD_KEY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")  # 'norm.1.weight' -> 'norm1.weight'


def pretrained_kwargs(name: str, weights) -> dict:
    """The constructor arguments torchvision's builder derives from `weights`."""
    kwargs = {"num_classes": len(weights.meta["categories"])}
    if name in AUX_HEADS:
        kwargs.update(transform_input=True, aux_logits=True, init_weights=False)
    if name.startswith("vit_"):
        kwargs["image_size"] = weights.meta["min_size"][0]
    if name.startswith("maxvit_"):
        kwargs["input_size"] = weights.meta["min_size"]
    return kwargs


def load_pretrained(model, name: str, weights, what: str) -> None:
    """The weights file found or downloaded by tlzoo.model.hub, read by tlzoo's safe loader, into `model`."""
    from tlzoo.errors import WeightsError
    from tlzoo.model.hub import fetch_url
    from tlzoo.model.weights import load_state_file

    state = load_state_file(fetch_url(weights.url, what))
    if name.startswith("densenet"):  # the published files predate torchvision's key names
        state = {DENSENET_OLD_KEY.sub(r"\1\2.", key): value for key, value in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"the pretrained weights of {what} do not fit the network: {str(exc).splitlines()[0]}",
                           "the cached file may be damaged: delete it and try again") from None
    if name in AUX_HEADS:
        model.aux_logits = False
        for head in AUX_HEADS[name]:
            setattr(model, head, None)


def data_config(weights):
    from tlzoo.model.backbone import DataConfig

    transforms = weights.transforms()
    crop, resize = transforms.crop_size[0], transforms.resize_size[0]
    return DataConfig(input_size=(3, crop, crop), mean=tuple(transforms.mean), std=tuple(transforms.std),
                      interpolation=transforms.interpolation.value, crop_pct=round(crop / resize, 4))


def make_build(name: str):
    def build(options: TorchvisionOptions, weights: str = "pretrained"):
        from torchvision.models import get_model, get_model_weights

        from tlzoo.model.backbone import Backbone

        from tlzoo.plugins.torchvision.split import family_of

        chosen = choose_weights(name, weights)
        kwargs = options.model_dump(exclude_none=True)
        kwargs.update(no_weights_kwargs(name) if chosen is None else pretrained_kwargs(name, chosen))
        model = get_model(name, weights=None, **kwargs)
        if chosen is not None:
            load_pretrained(model, name, chosen, PREFIX + name)
        classifier, splitter = family_of(model)
        config = data_config(chosen or get_model_weights(name).DEFAULT)
        source = f"torchvision:{chosen.name}" if chosen is not None else "none"
        return Backbone(model=model, data_config=config, classifier=classifier, split=splitter, weights=source)

    return build


def make_info(name: str, default):
    def describe() -> dict:
        return {"weights": "download", "params": default.meta.get("num_params"),
                "input_size": default.transforms().crop_size[0], "sources": [{"url": default.url}]}

    return describe


def describe(name: str, default) -> str:
    top1 = default.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    score = f", ImageNet top-1 {top1:.1f}%" if top1 else ""
    return f"torchvision {name} ({default.name} weights{score})"


@hookimpl
@names_under(PREFIX)  # looking up another plugin's name then imports no torchvision
def register_backbones(register):
    import torchvision
    from torchvision.models import get_model_weights, list_models

    for name in list_models(module=torchvision.models):
        default = get_model_weights(name).DEFAULT
        register(Component(name=PREFIX + name, description=describe(name, default), build=make_build(name),
                           options=options_for(name), info=make_info(name, default),
                           extra={"check_weights": lambda options, weights, name=name: check_weights(name, options, weights)}))
