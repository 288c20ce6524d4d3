"""Cutting timm networks into stages and parameter groups.

Groups come from timm's own `group_matcher(coarse=True)` where the model has
one. Stages follow the forward pass: networks with the common
stem / blocks / head layout get one stage per block stage, so a frozen lower
part can be cached; any other network is one stage up to the pooled features.
"""

from __future__ import annotations

from torch import nn

from tlzoo.core.backbone import Split


class TimmFeatures(nn.Module):
    """Any timm model up to its pre-logits features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


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
    if left:  # parameters the matcher missed join the group after the one holding their neighbours
        groups[-1].extend(n for n in names if n in left)
    return groups


def _efficientnet_like(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """timm EfficientNet / MobileNet layouts: conv_stem, bn1, blocks, conv_head, bn2, pool."""
    needed = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")
    if not all(hasattr(model, n) for n in needed) or not isinstance(model.blocks, nn.Sequential):
        return None
    if type(model).__name__ != "EfficientNet":
        return None
    stages = [("stem", nn.Sequential(model.conv_stem, model.bn1))]
    stages += [(f"blocks.{i}", block) for i, block in enumerate(model.blocks)]
    stages.append(("head", nn.Sequential(model.conv_head, model.bn2, model.global_pool)))
    return stages


def split_timm(model: nn.Module) -> Split:
    """Drop the classifier and cut `model` into stages and groups."""
    model.reset_classifier(0)
    num_features = model.num_features
    layout = _efficientnet_like(model)
    if layout is None:
        stage = TimmFeatures(model)
        params = list(stage.model.named_parameters())
        lookup = dict(params)
        groups = [[lookup[n] for n in g] for g in _matcher_groups(model, params)]
        return Split([stage], groups, num_features)
    stages = [module for _, module in layout]
    groups = [list(module.parameters()) for module in stages]
    return Split(stages, [g for g in groups if g], num_features)
