"""Every timm model as a backbone: `timm/<name>`, and `timm/<name>.<tag>` for one set of pretrained weights.

The names of `timm.list_models()` are registered up front as cheap components
(no model is built); `resolve_backbone` answers tagged names and any other name
timm knows. Pretrained weights come from the HF hub cache or the torch hub cache
(see tlzoo.model.hub), are read by tlzoo's safe loader, and are handed to timm as
a state dict so that timm's own checkpoint filters and head handling still apply.
timm is imported inside functions only: importing it takes seconds.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tlzoo.registry import Component, hookimpl, names_under

PREFIX = "timm/"
PLUGIN = "timm_backbones"


class TimmOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    drop_rate: float | None = Field(None, ge=0, lt=1, description="dropout on the pre-logits features (default: the model's)")
    drop_path_rate: float | None = Field(None, ge=0, lt=1, description="stochastic depth (default: the model's)")
    img_size: int | None = Field(None, gt=0, description="input size, for models built for one size such as ViTs "
                                                          "(default: the pretrained size)")


def pretrained_cfg(model_name: str):
    """timm's pretrained config for 'arch' (its default tag) or 'arch.tag'; None when there is none."""
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(model_name, allow_unregistered=False)
    except RuntimeError:  # timm's answer for an unknown tag of a known model
        return None


def sources_of(cfg) -> list[dict]:
    """Where the weights of `cfg` can come from, in timm's order of preference (hub first)."""
    from tlzoo.model.hub import HF_FILES

    sources = []
    if cfg is not None and cfg.hf_hub_id:
        sources.append({"hf": cfg.hf_hub_id, "files": [cfg.hf_hub_filename] if cfg.hf_hub_filename else list(HF_FILES)})
    if cfg is not None and cfg.url:
        sources.append({"url": cfg.url})
    return sources


def loadable_sources(cfg, what: str) -> list[dict]:
    """The sources of `cfg`'s weights; WeightsError when there are none or only timm's own loader reads them."""
    from tlzoo.errors import WeightsError

    sources = sources_of(cfg)
    if not sources:
        raise WeightsError(f"{what} has no pretrained weights in timm",
                           "use backbone.weights: \"none\" or a local file {\"path\": ...}; "
                           "'tlzoo list backbones --pretrained' lists backbones with weights")
    if cfg.custom_load == "hf" or (cfg.custom_load and not cfg.hf_hub_id):
        raise WeightsError(f"the weights of {what} come in a format only timm's own loader reads",
                           "pick another tag of this model, or convert the weights to .safetensors "
                           "and give them as backbone.weights: {\"path\": ...}")
    return sources


def load_pretrained_state(model_name: str, cfg, what: str) -> dict:
    """The state dict of `cfg`'s weights: from a cache when there, else downloaded."""
    from tlzoo.model.hub import cached_file, fetch_hf, fetch_url
    from tlzoo.model.weights import load_state_file

    sources = loadable_sources(cfg, what)
    for source in sources:
        found = cached_file(source)
        if found is not None:
            return load_state_file(found)
    first = sources[0]
    path = fetch_hf(first["hf"], what, tuple(first["files"])) if "hf" in first else fetch_url(first["url"], what)
    return load_state_file(path)


def choose_weights(model_name: str, weights: str) -> tuple[str, bool]:
    """(model name with tag, pretrained?) for the spec's `weights`: pretrained, none or a tag name."""
    from tlzoo.errors import WeightsError
    from timm import list_pretrained
    from timm.models import split_model_name_tag

    if weights in ("none", "pretrained"):
        return model_name, weights == "pretrained"
    arch, tag = split_model_name_tag(model_name)
    if tag and tag != weights:
        raise WeightsError(f"backbone timm/{model_name} names the weights {tag!r} and backbone.weights names {weights!r}",
                           f"use backbone.weights: \"pretrained\" with timm/{model_name}, or name timm/{arch}")
    if pretrained_cfg(f"{arch}.{weights}") is None:
        tags = [name.split(".", 1)[1] for name in list_pretrained(f"{arch}.*")]
        raise WeightsError(f"timm/{arch} has no weights named {weights!r}",
                           f"use 'pretrained', 'none'{''.join(', ' + repr(t) for t in tags)} or {{\"path\": ...}}")
    return f"{arch}.{weights}", True


def check_weights(model_name: str):
    """What build would refuse about `weights` before training, downloading nothing (for `tlzoo validate`):
    an unknown tag, no pretrained weights, a format only timm reads, weights neither cached nor obtainable."""
    def check(options: TimmOptions, weights: str) -> None:
        from tlzoo.model.hub import check_obtainable

        name, pretrained = choose_weights(model_name, weights)
        if pretrained:
            check_obtainable(loadable_sources(pretrained_cfg(name), f"timm/{name}"), f"timm/{name}")

    return check


def data_config(model, options: TimmOptions):
    from timm.data import resolve_model_data_config

    from tlzoo.model.backbone import DataConfig

    cfg = resolve_model_data_config(model)
    size = tuple(cfg["input_size"])
    if options.img_size:
        size = (size[0], options.img_size, options.img_size)
    return DataConfig(input_size=size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                      interpolation=cfg.get("interpolation") or "bilinear", crop_pct=float(cfg.get("crop_pct") or 1.0))


def create(model_name: str, options: TimmOptions, pretrained: bool, what: str):
    import timm

    from tlzoo.errors import TlzooError, WeightsError

    kwargs = options.model_dump(exclude_none=True)
    if pretrained:
        cfg = pretrained_cfg(model_name)
        state = load_pretrained_state(model_name, cfg, what)
        kwargs["pretrained_cfg_overlay"] = {"state_dict": state}
    try:
        model = timm.create_model(model_name, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        if not any(name in str(exc) for name in options.model_fields_set):
            raise
        raise TlzooError(f"backbone {what} does not take one of the options {sorted(options.model_fields_set)}: {exc}",
                         "remove that option from backbone.options") from None
    except RuntimeError as exc:
        if not pretrained:
            raise
        raise WeightsError(f"the pretrained weights of {what} do not fit the network: {str(exc).splitlines()[0]}",
                           "the cached file may be damaged: delete it and try again") from None
    model.pretrained_cfg.pop("state_dict", None)  # no second reference to the tensors
    return model


def make_build(model_name: str):
    def build(options: TimmOptions, weights: str = "pretrained"):
        from tlzoo.model.backbone import Backbone

        from tlzoo.plugins.timm.split import split_timm

        name, pretrained = choose_weights(model_name, weights)
        model = create(name, options, pretrained, f"timm/{name}")
        classifier = model.pretrained_cfg.get("classifier") or ""
        if isinstance(classifier, (tuple, list)):
            classifier = classifier[0]
        source = f"timm:{name}" if pretrained else "none"
        return Backbone(model=model, data_config=data_config(model, options), classifier=classifier,
                        split=split_timm, weights=source)

    return build


def make_info(model_name: str):
    def facts(cfg) -> dict:
        sources = sources_of(cfg)
        size = cfg.input_size[-1] if cfg is not None and cfg.input_size else None
        return {"weights": "download" if sources else "none", "input_size": size, "sources": sources}

    def describe() -> dict:
        from timm.models import get_arch_pretrained_cfgs

        # each pretrained tag is a backbone of its own (timm/<name>.<tag>), listed from timm's configs
        tagged = get_arch_pretrained_cfgs(model_name) if "." not in model_name else {}  # 'arch.tag' -> cfg
        variants = [{"name": PREFIX + name, **facts(cfg)} for name, cfg in tagged.items() if "." in name]
        return {**facts(pretrained_cfg(model_name)), "variants": variants}

    return describe


def component(model_name: str, plugin: str = "") -> Component:
    return Component(name=PREFIX + model_name, description=f"timm {model_name}", build=make_build(model_name),
                     options=TimmOptions, info=make_info(model_name), plugin=plugin,
                     extra={"check_weights": check_weights(model_name)})


@hookimpl
@names_under(PREFIX)  # looking up efficientnet_lite0 (or a plugin's name) then imports no timm
def register_backbones(register):
    import timm

    for model_name in timm.list_models():
        register(component(model_name))


@hookimpl
def resolve_backbone(name):
    if not name.startswith(PREFIX):
        return None
    import timm
    from timm.models import split_model_name_tag

    model_name = name[len(PREFIX):]
    arch, tag = split_model_name_tag(model_name)
    if not timm.is_model(arch) or (tag and pretrained_cfg(model_name) is None):
        return None
    return component(model_name, plugin=PLUGIN)
