"""Every torchvision classification model as a backbone `torchvision/<name>`.

Weights come through torchvision's weights API (`DEFAULT` for "pretrained", or
a named enum such as "IMAGENET1K_V2"); the input size, mean, std and
interpolation come from those weights' transforms. The state dict is found in
the torch hub cache or downloaded (tlzoo.model.hub) and read by tlzoo's safe
loader. torchvision is imported inside functions only: importing it takes seconds.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from pydantic import BaseModel, ConfigDict, Field

from tlzoo.registry import Component, hookimpl

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


_patch_lock = threading.Lock()


@contextmanager
def weights_read_by_tlzoo(what: str):
    """Route torchvision's state-dict download through tlzoo's cache lookup and safe loader.

    torchvision's builders fetch weights via `_api.load_state_dict_from_url`; replacing only that
    keeps torchvision's per-model fix-ups (DenseNet key renames, dropping GoogLeNet's aux heads,
    the ViT image size) while no file is read by anything but tlzoo.model.weights.load_state_file.
    """
    from torchvision.models import _api

    from tlzoo.model.hub import fetch_url
    from tlzoo.model.weights import load_state_file

    calls = []

    def load(url, *args, **kwargs):
        calls.append(url)
        return load_state_file(fetch_url(url, what))

    with _patch_lock:
        original = _api.load_state_dict_from_url
        _api.load_state_dict_from_url = load
        try:
            yield calls
        finally:
            _api.load_state_dict_from_url = original


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
        from tlzoo.errors import WeightsError

        from tlzoo.plugins.torchvision.split import family_of

        chosen = choose_weights(name, weights)
        kwargs = options.model_dump(exclude_none=True)
        if chosen is None:
            kwargs.update(no_weights_kwargs(name))
        with weights_read_by_tlzoo(PREFIX + name) as calls:
            try:
                model = get_model(name, weights=chosen, **kwargs)
            except RuntimeError as exc:
                if not calls:
                    raise
                raise WeightsError(f"the pretrained weights of {PREFIX + name} do not fit the network: "
                                   f"{str(exc).splitlines()[0]}",
                                   "the cached file may be damaged: delete it and try again") from None
        if chosen is not None and not calls:
            raise RuntimeError(f"torchvision built {name} without asking tlzoo for its weights; "
                               "this torchvision version loads weights another way")
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
def register_backbones(register):
    import torchvision
    from torchvision.models import get_model_weights, list_models

    for name in list_models(module=torchvision.models):
        default = get_model_weights(name).DEFAULT
        register(Component(name=PREFIX + name, description=describe(name, default), build=make_build(name),
                           options=options_for(name), info=make_info(name, default),
                           extra={"check_weights": lambda options, weights, name=name: choose_weights(name, weights)}))
