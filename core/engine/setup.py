"""What a run, `tlzoo lr-find` and `tlzoo rank` build before any training, worked out in one place.

The device, the precision, the model on its device, the freeze strategy and
its plan, the fast-pass mode and the batch sources: built the same way for all
three, so that they agree, and so that `rank` and `lr-find` read and warm the
same cache entries a run does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tlzoo.data.batches import SourceSetup, eval_source, train_source
from tlzoo.data.transforms import build_eval_transform, build_train_transform, is_deterministic, \
    with_stated_normalization
from tlzoo.model.build import build_model
from tlzoo.model.freeze import plan_run
from tlzoo.rundir.outputs import resolved_spec_json
from tlzoo.runtime.device import resolve_device, resolve_workers
from tlzoo.runtime.fast_pass import fast_mode
from tlzoo.runtime.precision import resolve_precision


@dataclass
class ModelSetup:
    """The model and how its passes run, before any run directory exists."""

    resolved: object
    data: object  # LabelledData
    built: object  # BuiltModel
    spec_json: dict
    device: torch.device
    precision: str
    strategy: object  # the spec's FreezeStrategy, built once
    plans: list  # its EpochPlan for every epoch (tlzoo.model.freeze.plan_run): the loop, the cache and the allocator
    fast: str  # 'folded' or 'eager' for frozen and evaluation passes (tlzoo.runtime.fast_pass.fast_mode)


def model_setup(resolved, data, log=None, device: torch.device | None = None) -> ModelSetup:
    """The spec's model for `data`'s classes on `device` (the spec's when None), channels_last on a CPU."""
    spec = resolved.spec
    device = device or resolve_device(spec.train.device)
    precision = resolve_precision(spec.train.precision, device)
    built = build_model(resolved.backbone, spec.backbone.weights, spec.head, len(data.classes), resolved.base_dir)
    stated = with_stated_normalization(built.data_config, spec.data.augment)
    if stated is not built.data_config:
        built.data_config = stated
        if log is not None:
            log(f"data: data.augment's normalize op sets mean {list(stated.mean)}, std {list(stated.std)}; "
                "evaluation and prediction use them too")
    built.model.to(device)
    if device.type == "cpu":
        built.model.to(memory_format=torch.channels_last)
    strategy = resolved.strategy.build()
    return ModelSetup(resolved, data, built, resolved_spec_json(resolved), device, precision, strategy,
                      plan_run(built.model, strategy, spec.train.epochs),
                      fast_mode(spec.train.precision, precision, device))


def batch_sources(setup: ModelSetup, sharded: bool = False, for_training: bool = True):
    """(train, val) batch sources of the spec's data, before any cache is put in front of them.

    `sharded`: under torchrun, each rank its share of the global batch and of the validation images.
    `for_training` False keeps every training image in file order (features for `rank` and `inspect`, not
    batches to train on).
    """
    spec, data = setup.resolved.spec, setup.data
    # a last batch of one image cannot train a BatchNorm; it is dropped (a different one each epoch)
    drop_last = for_training and len(data.train) % spec.data.batch_size == 1 and len(data.train) > 1
    train = train_source(SourceSetup(
        data.train, build_train_transform(spec.data.augment, setup.built.data_config), spec.data.batch_size,
        resolve_workers(spec.data.num_workers, len(data.train)), spec.train.seed, shuffle=for_training,
        background=spec.data.background, drop_last=drop_last, deterministic=is_deterministic(spec.data.augment),
        sharded=sharded))
    val = eval_source(SourceSetup(
        data.val, build_eval_transform(setup.built.data_config), eval_batch_size(spec),
        resolve_workers(spec.data.num_workers, len(data.val)), spec.train.seed, shuffle=False,
        background=spec.data.background, sharded=sharded))
    return train, val


def eval_batch_size(spec) -> int:
    return spec.data.eval_batch_size or spec.data.batch_size
