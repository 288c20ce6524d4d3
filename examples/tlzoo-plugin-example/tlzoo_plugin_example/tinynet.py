"""TinyNet: a small CNN built as tlzoo expects a backbone to be.

The builder returns a tlzoo Backbone: the whole network with its own classifier
(so weight files keyed by its names load), the dotted classifier name, the data
config, and a split into sequential stages and parameter groups.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TinyNetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(16, gt=0, le=256, description="channels of the first stage (doubled at each stage)")
    input_size: int = Field(64, ge=16, description="side of the square input images")


def _network(width: int, num_classes: int = 10):
    from torch import nn

    def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    widths = [width, width * 2, width * 4, width * 8]
    return nn.Sequential(
        stage(3, widths[0], 2),  # stem
        stage(widths[0], widths[1], 2),
        stage(widths[1], widths[2], 2),
        stage(widths[2], widths[3], 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(widths[3], num_classes),  # the classifier tlzoo replaces: "6"
    )


def split_tinynet(model):
    """Stem and three stages, each its own parameter group; the last one pools."""
    from torch import nn

    from tlzoo.model.backbone import Split

    stages = [model[0], model[1], model[2], nn.Sequential(model[3], model[4], model[5])]
    return Split(stages=stages, groups=[list(s.parameters()) for s in stages], num_features=model[6].in_features)


def build_tinynet(options: TinyNetOptions, weights: str = "pretrained"):
    from tlzoo.model.backbone import Backbone, DataConfig
    from tlzoo.errors import WeightsError

    if weights not in ("none", "pretrained"):
        raise WeightsError(f"example/tinynet has no weights named {weights!r}", "use backbone.weights: \"none\"")
    if weights == "pretrained":
        raise WeightsError("example/tinynet has no pretrained weights",
                           "use backbone.weights: \"none\", or a file of your own with {\"path\": ...}")
    size = options.input_size
    config = DataConfig(input_size=(3, size, size), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                        interpolation="bilinear", crop_pct=1.0)
    return Backbone(model=_network(options.width), data_config=config, classifier="6", split=split_tinynet)


def describe_tinynet() -> dict:
    return {"weights": "none", "input_size": TinyNetOptions().input_size}
