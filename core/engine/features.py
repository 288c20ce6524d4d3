"""Pooled features of a spec's images, through the frozen-prefix cache: what `rank`, `inspect` and a run's
data findings read.

With every stage frozen the cache's entry is the backbone's pooled output. The
sources are set up as a head_only run with `augment: "none"` sets them up, so
the entries are the same ones (same key): a `rank` warms the cache for such a
run, a run warms it for `rank`, and a second `rank` reads features only. The
test split, when there is one, gets entries of its own (role "test").
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from pydantic import BaseModel

from tlzoo.cache import FrozenPrefixSource, attach_caches
from tlzoo.cache.keys import digest
from tlzoo.cache.store import read_meta
from tlzoo.data.batches import SourceSetup, eval_source
from tlzoo.data.transforms import build_eval_transform
from tlzoo.engine.setup import batch_sources, eval_batch_size, model_setup
from tlzoo.model.backbone import count_parameters
from tlzoo.model.freeze import FreezeStrategy, Phase
from tlzoo.runtime.device import autocast, resolve_workers


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
    cached: bool  # every split came out of the cache
    test_x: torch.Tensor | None = None  # when asked for and the data has a test split
    test_y: torch.Tensor | None = None

    @property
    def images(self) -> int:
        return self.train_y.numel() + self.val_y.numel() + (0 if self.test_y is None else self.test_y.numel())


class _Frozen(FreezeStrategy):
    def phase(self, epoch, num_groups):
        return Phase(trainable=1)


class _NoOptions(BaseModel):
    pass


class _FrozenComponent:
    """Stands in for the head_only strategy component: the features need its plan, not the registry."""

    name = "head_only"
    options = _NoOptions()

    def build(self) -> FreezeStrategy:
        return _Frozen()


def frozen_view(resolved):
    """`resolved` as a head_only run without augmentation sees it: same backbone, weights, data and cache.

    A run's findings need the pretrained backbone's features whatever the run trained; for a head_only
    run with `augment: "none"` these are the very cache entries it trained on.
    """
    view = copy.copy(resolved)
    view.spec = resolved.spec.model_copy(deep=True)
    view.spec.train.strategy.name, view.spec.train.strategy.options = "head_only", {}
    view.spec.data.augment = "none"
    view.strategy = _FrozenComponent()
    return view


def pooled_features(resolved, data, log, with_test: bool = False) -> Features:
    """The pooled features of `data` (a LabelledData) under `resolved`'s backbone, weights and data settings.

    `resolved` should be a head_only spec (tlzoo.probe.ranking.probe_spec or frozen_view makes one): its
    strategy decides what the cache treats as frozen. `with_test`: also the test split's, when there is one.
    """
    setup = model_setup(resolved, data)
    model = setup.built.model.eval()
    started = time.perf_counter()
    train, val = batch_sources(setup, for_training=False)  # as a run builds them, so that the cache keys agree
    test = held_out_source(setup) if with_test and data.test else None
    train, val = attach_caches(setup, train, val, log)
    if test is not None and isinstance(val, FrozenPrefixSource):
        test = FrozenPrefixSource(test, model, val.settings, "test", 1)
    splits = [split_features(source, model, setup.device, setup.precision)
              for source in (train, val, test) if source is not None]
    (train_x, train_y, _), (val_x, val_y, _) = splits[:2]
    backbone_parameters = count_parameters(model) - count_parameters(model.head)
    features = Features(train_x, train_y, val_x, val_y, len(data.classes), backbone_parameters,
                        tuple(setup.built.data_config.input_size), setup.built.weights,
                        time.perf_counter() - started, all(cached for _, _, cached in splits))
    if test is not None:
        features.test_x, features.test_y = splits[2][:2]
    return features


def held_out_source(setup):
    spec, items = setup.resolved.spec, setup.data.test
    return eval_source(SourceSetup(items, build_eval_transform(setup.built.data_config), eval_batch_size(spec),
                                   resolve_workers(spec.data.num_workers, len(items)), spec.train.seed,
                                   shuffle=False, background=spec.data.background))


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
    """Features without the cache (cache.enabled false): one pass, in the source's order (file order: the
    sources of batch_sources(for_training=False) do not shuffle)."""
    values, labels = [], []
    with torch.inference_mode(), autocast(precision, device):
        for batch in source.epoch(0, 0):
            x = batch.x.to(device)
            if x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            values.append(model.forward_stages(x).float().flatten(1).cpu())
            labels.append(batch.y)
    return torch.cat(values), torch.cat(labels)
