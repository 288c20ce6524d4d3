"""Cutting torchvision classifiers into stages and parameter groups, one splitter per family.

Each splitter leaves the final classifier out and returns stages that, run in
order, give the pooled pre-logits features; one parameter group per stage.
FAMILIES maps the network's class name to (dotted classifier name, splitter).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from tlzoo.model.backbone import Pooled, Split

from tlzoo.model.splitting import ClassToken, OwnerView, Renormalize, chunk_after, chunk_at, downsamples, split_into

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _seq(*modules: nn.Module) -> nn.Sequential:
    return nn.Sequential(*modules)


def _is_pool(module: nn.Module) -> bool:
    return isinstance(module, nn.MaxPool2d)


def _by_resolution(blocks: nn.Sequential) -> list[nn.Sequential]:
    """Stem first, then a new stage wherever a block downsamples."""
    return chunk_at(list(blocks), downsamples)


def _pre_logits(classifier: nn.Sequential) -> list[nn.Module]:
    """A classifier Sequential without its final layer and the dropout right before it.

    That dropout belongs to the old classifier; the new head has its own (`head.dropout`).
    """
    layers = list(classifier)[:-1]
    while layers and isinstance(layers[-1], nn.Dropout):
        layers.pop()
    return layers


def resnet(model) -> Split:
    stem = _seq(model.conv1, model.bn1, model.relu, model.maxpool)
    stages = [stem, model.layer1, model.layer2, model.layer3, _seq(model.layer4, Pooled())]
    return split_into(stages, model.fc.in_features)


def vgg(model) -> Split:
    """AlexNet and VGG: conv blocks up to each max-pool, then the fc6/fc7 layers kept as features."""
    blocks = chunk_after(list(model.features), _is_pool)
    top = _seq(model.avgpool, nn.Flatten(1), *_pre_logits(model.classifier))
    return split_into(blocks + [top], model.classifier[-1].in_features)


def mobilenet(model) -> Split:
    """MobileNet v2/v3 and EfficientNet v1/v2: `features` by resolution, pooled, pre-logits layers."""
    stages = _by_resolution(model.features)
    stages[-1] = _seq(*stages[-1], Pooled(), *_pre_logits(model.classifier))
    return split_into(stages, model.classifier[-1].in_features)


def efficientnet(model) -> Split:
    """`features` is already stem, one Sequential per stage, and the head conv."""
    stages = list(model.features)
    stages[-1] = _seq(stages[-1], Pooled())
    return split_into(stages, model.classifier[-1].in_features)


def _paired(features: nn.Sequential) -> list[nn.Module]:
    """[stem, stage, downsample, stage, ...] -> stem, stage, (downsample + stage), ..."""
    items = list(features)
    return items[:2] + [_seq(items[i], items[i + 1]) for i in range(2, len(items), 2)]


def convnext(model) -> Split:
    stages = _paired(model.features)
    stages[-1] = _seq(stages[-1], model.avgpool, *_pre_logits(model.classifier))
    return split_into(stages, model.classifier[-1].in_features)


def swin(model) -> Split:
    stages = _paired(model.features)
    stages[-1] = _seq(stages[-1], model.norm, model.permute, model.avgpool, model.flatten)
    return split_into(stages, model.head.in_features)


def regnet(model) -> Split:
    blocks = list(model.trunk_output)
    stages = [model.stem, *blocks[:-1], _seq(blocks[-1], model.avgpool, nn.Flatten(1))]
    return split_into(stages, model.fc.in_features)


def densenet(model) -> Split:
    """Stem, then each dense block with the transition after it; the last one with norm5."""
    stages = chunk_at(list(model.features.children()), lambda m: type(m).__name__ == "_DenseBlock")
    stages[-1] = _seq(*stages[-1], nn.ReLU(), Pooled())
    return split_into(stages, model.classifier.in_features)


def mnasnet(model) -> Split:
    """`layers`: plain stem layers, one Sequential per stack, then the head conv."""
    layers = list(model.layers)
    stacks = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Sequential)]
    first, last = stacks[0], stacks[-1]
    stages = [_seq(*layers[:first]), *layers[first:last + 1], _seq(*layers[last + 1:], Pooled())]
    return split_into(stages, model.classifier[-1].in_features)


def shufflenet(model) -> Split:
    stages = [_seq(model.conv1, model.maxpool), model.stage2, model.stage3, model.stage4, _seq(model.conv5, Pooled())]
    return split_into(stages, model.fc.in_features)


def squeezenet(model) -> Split:
    """The classifier is a 1x1 conv; the new head works on the pooled 512 channels instead."""
    blocks = chunk_after(list(model.features), _is_pool)
    blocks[-1] = _seq(*blocks[-1], Pooled())
    return split_into(blocks, model.classifier[1].in_channels)


def _input_transform(model) -> list[nn.Module]:
    """torchvision's `transform_input`: ImageNet-normalised input rescaled to the [-1, 1] the weights saw."""
    if not getattr(model, "transform_input", False):
        return []
    scale = [s / 0.5 for s in IMAGENET_STD]
    shift = [(m - 0.5) / 0.5 for m in IMAGENET_MEAN]
    return [Renormalize(scale, shift)]


def googlenet(model) -> Split:
    m = model
    stages = [
        _seq(*_input_transform(m), m.conv1, m.maxpool1, m.conv2, m.conv3, m.maxpool2),
        _seq(m.inception3a, m.inception3b, m.maxpool3),
        _seq(m.inception4a, m.inception4b, m.inception4c, m.inception4d, m.inception4e, m.maxpool4),
        _seq(m.inception5a, m.inception5b, m.avgpool, nn.Flatten(1)),
    ]
    return split_into(stages, m.fc.in_features)


def inception(model) -> Split:
    m = model
    stages = [
        _seq(*_input_transform(m), m.Conv2d_1a_3x3, m.Conv2d_2a_3x3, m.Conv2d_2b_3x3, m.maxpool1,
             m.Conv2d_3b_1x1, m.Conv2d_4a_3x3, m.maxpool2),
        _seq(m.Mixed_5b, m.Mixed_5c, m.Mixed_5d),
        _seq(m.Mixed_6a, m.Mixed_6b, m.Mixed_6c, m.Mixed_6d, m.Mixed_6e),
        _seq(m.Mixed_7a, m.Mixed_7b, m.Mixed_7c, m.avgpool, nn.Flatten(1)),
    ]
    return split_into(stages, m.fc.in_features)


class ViTEmbedding(OwnerView):
    """Patches, class token, position embedding: the part of torchvision's ViT before the encoder blocks."""

    def __init__(self, model):
        super().__init__(model, {"conv_proj": model.conv_proj, "dropout": model.encoder.dropout},
                         {"class_token": model.class_token, "pos_embedding": model.encoder.pos_embedding})

    def forward(self, x):
        x = self.owner._process_input(x)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


def vit(model) -> Split:
    """One stage per encoder block: ViTs have no resolution stages, and fine groups suit them."""
    blocks = list(model.encoder.layers)
    top = _seq(model.encoder.ln, ClassToken(), *_pre_logits(model.heads))
    stages = [ViTEmbedding(model), *blocks, top]
    return split_into(stages, model.heads[-1].in_features)


def maxvit(model) -> Split:
    blocks = list(model.blocks)
    stages = [model.stem, *blocks[:-1], _seq(blocks[-1], *_pre_logits(model.classifier))]
    return split_into(stages, model.classifier[-1].in_features)


FAMILIES = {
    "ResNet": ("fc", resnet),
    "AlexNet": ("classifier.6", vgg),
    "VGG": ("classifier.6", vgg),
    "MobileNetV2": ("classifier.1", mobilenet),
    "MobileNetV3": ("classifier.3", mobilenet),
    "EfficientNet": ("classifier.1", efficientnet),
    "ConvNeXt": ("classifier.2", convnext),
    "SwinTransformer": ("head", swin),
    "RegNet": ("fc", regnet),
    "DenseNet": ("classifier", densenet),
    "MNASNet": ("classifier.1", mnasnet),
    "ShuffleNetV2": ("fc", shufflenet),
    "SqueezeNet": ("classifier.1", squeezenet),
    "GoogLeNet": ("fc", googlenet),
    "Inception3": ("fc", inception),
    "VisionTransformer": ("heads.head", vit),
    "MaxVit": ("classifier.5", maxvit),
}


class WithoutClassifier(nn.Module):
    """A network of an unknown family, run whole with its classifier bypassed."""

    def __init__(self, model: nn.Module, classifier: str):
        super().__init__()
        parent, _, leaf = classifier.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, nn.Identity())
        self.model = model

    def forward(self, x):
        return self.model(x).flatten(1)


def last_linear(model: nn.Module) -> str:
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return names[-1] if names else ""


def family_of(model: nn.Module) -> tuple[str, Callable[[nn.Module], Split]]:
    """(classifier name, splitter) for `model`; unknown families run whole as one stage."""
    known = FAMILIES.get(type(model).__name__)
    if known is not None:
        return known
    classifier = last_linear(model)

    def split_whole(network) -> Split:
        in_features = network.get_submodule(classifier).in_features
        return split_into([WithoutClassifier(network, classifier)], in_features)

    return classifier, split_whole
