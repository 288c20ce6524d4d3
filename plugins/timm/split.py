"""Cutting timm networks into stages and parameter groups.

Networks whose class is in LAYOUTS are cut into sequential stages that follow
their own `forward_features`: the stem, each block stage (or each block, for
transformers), then a top stage that runs whatever comes after the blocks and
the model's own `forward_head(pre_logits=True)`. One parameter group per stage,
so a frozen lower part can be cached. tests/test_timm_backbones.py checks for
every layout that the stages give exactly the model's pre-logits features.

Any other network is one stage up to its pre-logits features, with parameter
groups from timm's own `group_matcher(coarse=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tlzoo.model.backbone import Split

from tlzoo.model.splitting import OwnerView, split_into


@dataclass(frozen=True)
class Layout:
    stem: tuple[str, ...]  # children run first, in this order
    blocks: str | tuple[str, ...]  # one container whose children are stages, or several children, each a stage
    post: tuple[str, ...] = ()  # children run after the blocks, before forward_head
    stem_params: tuple[str, ...] = ()  # parameters owned by the model itself, used by the stem


STAGES = Layout(("stem",), "stages")
LAYOUTS = {
    "ResNet": Layout(("conv1", "bn1", "act1", "maxpool"), ("layer1", "layer2", "layer3", "layer4")),
    "EfficientNet": Layout(("conv_stem", "bn1"), "blocks", ("conv_head", "bn2")),
    "MobileNetV3": Layout(("conv_stem", "bn1"), "blocks"),
    "GhostNet": Layout(("conv_stem", "bn1", "act1"), "blocks"),
    "ConvNeXt": Layout(("stem",), "stages", ("norm_pre",)),
    "DaVit": Layout(("stem",), "stages", ("norm_pre",)),
    "EdgeNeXt": Layout(("stem",), "stages", ("norm_pre",)),
    "RDNet": Layout(("stem",), "dense_stages", ("norm_pre",)),
    "MaxxVit": Layout(("stem",), "stages", ("norm",)),
    "ResNetV2": Layout(("stem",), "stages", ("norm",)),
    "StarNet": Layout(("stem",), "stages", ("norm",)),
    "FocalNet": Layout(("stem",), "layers", ("norm",)),
    "ByobNet": Layout(("stem",), "stages", ("final_conv",)),
    "FastVit": Layout(("stem",), "stages", ("final_conv",)),
    "NormFreeNet": Layout(("stem",), "stages", ("final_conv", "final_act")),
    "RegNet": Layout(("stem",), ("s1", "s2", "s3", "s4"), ("final_conv",)),
    "CspNet": STAGES,
    "MambaOut": STAGES,
    "MetaFormer": STAGES,
    "MetaNeXt": STAGES,
    "VovNet": STAGES,
    "HighPerfGpuNet": STAGES,
    "RepVit": STAGES,
    "RexNet": Layout(("stem",), "features"),
    "DLA": Layout(("base_layer",), ("level0", "level1", "level2", "level3", "level4", "level5")),
    "XceptionAligned": Layout(("stem",), "blocks", ("act",)),
    "MlpMixer": Layout(("stem",), "blocks", ("norm",)),
    "SwinTransformer": Layout(("patch_embed",), "layers", ("norm",)),
    "TinyVit": Layout(("patch_embed",), "stages"),
    "VisionTransformer": Layout(("patch_embed", "pos_drop", "patch_drop", "norm_pre"), "blocks", ("norm",),
                                ("cls_token", "reg_token", "pos_embed")),
}


class TimmFeatures(nn.Module):
    """Any timm model up to its pre-logits features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


class ViTEmbedding(OwnerView):
    """Patches plus class/register tokens and position embedding, by the model's own `_pos_embed`."""

    def forward(self, x):
        owner = self.owner
        x = owner.patch_embed(x)
        x = owner._pos_embed(x)
        return owner.norm_pre(owner.patch_drop(x))


class PreLogits(OwnerView):
    """The model's own `forward_head(x, pre_logits=True)`, on the head parts registered here."""

    def forward(self, x):
        return self.owner.forward_head(x, pre_logits=True)


def pre_logits_width(model: nn.Module) -> int:
    """Width of forward_head(pre_logits=True): larger than num_features where a head conv follows the pool."""
    return getattr(model, "head_hidden_size", None) or model.num_features


def _children(model: nn.Module, names) -> list[nn.Module]:
    return [getattr(model, name) for name in names]


def staged(model: nn.Module, layout: Layout) -> list[nn.Module] | None:
    """Stages for `model` following `layout`, or None when the model does not have that shape."""
    block_names = (layout.blocks,) if isinstance(layout.blocks, str) else layout.blocks
    used = set(layout.stem) | set(block_names) | set(layout.post)
    children = dict(model.named_children())
    if not used <= set(children):
        return None
    own_params = {name for name, _ in model.named_parameters(recurse=False)}
    own_buffers = {name for name, _ in model.named_buffers(recurse=False)}
    if own_buffers or not own_params <= set(layout.stem_params):
        return None  # state held outside the children would belong to no stage
    if isinstance(layout.blocks, str):
        blocks = list(children[layout.blocks].children())
    else:
        blocks = _children(model, block_names)
    if not blocks:
        return None
    stem_modules = {name: children[name] for name in layout.stem}
    if layout.stem_params:
        params = {name: getattr(model, name, None) for name in layout.stem_params}
        stem: nn.Module = ViTEmbedding(model, stem_modules, {k: v for k, v in params.items() if isinstance(v, nn.Parameter)})
    else:
        stem = nn.Sequential(*stem_modules.values())
    head_parts = {name: module for name, module in children.items() if name not in used}
    top = nn.Sequential(*_children(model, layout.post), PreLogits(model, head_parts))
    return [stem, *blocks, top]


def _matcher_groups(model: nn.Module, params: list[tuple[str, nn.Parameter]]) -> list[list[str]]:
    """Parameter names grouped stem to top by timm's group matcher, or one group."""
    from timm.models import group_parameters

    names = [name for name, _ in params]
    if not hasattr(model, "group_matcher"):
        return [names]
    try:
        grouped = group_parameters(model, model.group_matcher(coarse=True))
    except Exception:  # a model whose matcher does not fit its own parameters
        return [names]
    wanted = set(names)
    groups = [[n for n in members if n in wanted] for _, members in sorted(grouped.items())]
    groups = [g for g in groups if g]
    left = wanted - {n for g in groups for n in g}
    if left:  # parameters the matcher missed join the top group
        groups[-1].extend(n for n in names if n in left)
    return groups


def split_timm(model: nn.Module) -> Split:
    """Drop the classifier and cut `model` into stages and groups."""
    model.reset_classifier(0)
    width = pre_logits_width(model)
    layout = LAYOUTS.get(type(model).__name__)
    stages = staged(model, layout) if layout is not None else None
    if stages is not None:
        return split_into(stages, width)
    stage = TimmFeatures(model)
    params = list(stage.model.named_parameters())
    lookup = dict(params)
    groups = [[lookup[n] for n in g] for g in _matcher_groups(model, params)]
    return Split([stage], groups, width)
