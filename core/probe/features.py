"""Pooled features of a spec's training and validation images, through the frozen-prefix cache.

With every stage frozen the cache's entry is the backbone's pooled output. The
sources are set up as a head_only run with `augment: "none"` sets them up, so
the entries are the same ones (same key): a `rank` warms the cache for such a
run, a run warms it for `rank`, and a second `rank` reads features only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from tlzoo.cache import FrozenPrefixSource, attach_caches
from tlzoo.cache.keys import digest
from tlzoo.cache.store import read_meta
from tlzoo.model.backbone import count_parameters
from tlzoo.engine.setup import batch_sources, model_setup
from tlzoo.runtime.device import autocast


@dataclass
class Features:
    train_x: torch.Tensor  # (n_train, D) float32
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    parameters: int  # of the backbone, the head left out
    input_size: tuple[int, int, int]
    weights: str  # where the weights came from
    seconds: float  # spent getting the features this time
    cached: bool  # both splits came out of the cache

    @property
    def images(self) -> int:
        return self.train_y.numel() + self.val_y.numel()


def pooled_features(resolved, data, log) -> Features:
    """The pooled features of `data` (a LabelledData) under `resolved`'s backbone, weights and data settings.

    `resolved` should be a head_only spec (tlzoo.probe.ranking.probe_spec makes one): its
    strategy decides what the cache treats as frozen.
    """
    setup = model_setup(resolved, data)
    model = setup.built.model.eval()
    started = time.perf_counter()
    train, val = batch_sources(setup, for_training=False)  # as a run builds them, so that the cache keys agree
    train, val = attach_caches(setup, train, val, log)
    (train_x, train_y, train_cached), (val_x, val_y, val_cached) = (
        split_features(source, model, setup.device, setup.precision) for source in (train, val))
    backbone_parameters = count_parameters(model) - count_parameters(model.head)
    return Features(train_x, train_y, val_x, val_y, len(data.classes), backbone_parameters,
                    tuple(setup.built.data_config.input_size), setup.built.weights, time.perf_counter() - started,
                    train_cached and val_cached)


def split_features(source, model, device, precision: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(features, labels, came from the cache) of one split, in the split's file order."""
    k = len(model.stages)
    if isinstance(source, FrozenPrefixSource):
        labels = source.labels
        published = read_meta(source.settings.root / digest(source.key_parts(k))) is not None
        store = source.store_for(k)
        if store is not None:
            rows = torch.arange(len(labels))
            values = store.read(rows, torch.zeros_like(rows)).flatten(1)
            source.close()
            return values, labels, published and source.stable
        source = source.base  # the cache declined this entry (budget, disk): compute in memory
    return computed_features(source, model, device, precision) + (False,)


def computed_features(source, model, device, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features without the cache (cache.enabled false): one pass, in whatever order the source gives."""
    values, labels = [], []
    with torch.inference_mode(), autocast(precision, device):
        for batch in source.epoch(0, 0):
            x = batch.x.to(device)
            if x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            values.append(model.forward_stages(x).float().flatten(1).cpu())
            labels.append(batch.y)
    return torch.cat(values), torch.cat(labels)
