"""Turn a backbone component into a TransferModel with a head for the user's classes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from tlzoo.model.backbone import Backbone, ClassifierHead, DataConfig, TransferModel, get_submodule
from tlzoo.model.weights import LoadReport, apply_state, load_state_file, made_by_tlzoo

RUN_MODEL_PREFIXES = ("stages.", "head.")  # a run checkpoint's model tensors; the rest is training state


@dataclass
class BuiltModel:
    model: TransferModel
    data_config: DataConfig
    weights: str
    report: LoadReport


def build_model(backbone_ref, weights, head, num_classes: int, base_dir: Path | None = None) -> BuiltModel:
    """`backbone_ref` is a ResolvedComponent; `weights` the spec's weights field (a name, or a
    model with a `path`); `head` has `dropout` and `hidden` (the spec's HeadSpec)."""
    from_file = not isinstance(weights, str)
    backbone: Backbone = backbone_ref.build(weights="none" if from_file else weights)
    report = LoadReport()
    source = backbone.weights
    run_state = None  # an earlier run's checkpoint: loaded into the whole model below, head included
    if from_file:
        path = Path(weights.path).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        state = load_state_file(path)
        if made_by_tlzoo(path):
            run_state = {key: value for key, value in state.items() if key.startswith(RUN_MODEL_PREFIXES)}
        else:
            if backbone.adapt_state is not None:
                state = backbone.adapt_state(backbone.model, state, str(path))
            report = apply_state(backbone.model, state, backbone.classifier, str(path))
        source = f"file:{path}"
    old = get_submodule(backbone.model, backbone.classifier)
    split = backbone.split(backbone.model)
    new_head = ClassifierHead(split.num_features, num_classes, head.dropout, head.hidden)
    if (
        isinstance(old, nn.Linear)
        and not head.hidden
        and old.out_features == num_classes
        and old.in_features == split.num_features
        and source != "none"
    ):
        # same class count: keep the pretrained classifier (timm does the same)
        new_head.fc.load_state_dict(old.state_dict())
    model = TransferModel(split, new_head)
    if run_state is not None:  # its head too when the shapes agree (same classes count and head), as timm does
        report = apply_state(model, run_state, "head", source.removeprefix("file:"))
    return BuiltModel(model, backbone.data_config, source, report)
