"""Cache builds take 8-bit images from the loader and normalize batches: bit-identical to the per-image path."""

from __future__ import annotations

import torch
from torch.utils.data import default_collate

from tlzoo.model.backbone import DataConfig
from tlzoo.cache.byte_inputs import byte_variant
from tlzoo.data.dataset import ImageDataset
from tlzoo.data.transforms import build_eval_transform, build_train_transform
from test_feature_cache import tiny_images

CONFIG = DataConfig(input_size=(3, 24, 24), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation="bicubic")


def test_eval_pipeline_gives_the_same_bits(tmp_path):
    items = tiny_images(tmp_path, count=6, size=30)
    dataset = ImageDataset(items, build_eval_transform(CONFIG))
    twin, finish = byte_variant(dataset)
    single = default_collate([dataset[i] for i in range(len(items))])[0]
    raw = default_collate([twin[i] for i in range(len(items))])[0]
    assert raw.dtype == torch.uint8 and raw.shape == (6, 3, 24, 24)
    batched = finish(raw)
    assert batched.dtype == torch.float32
    assert torch.equal(batched, single)  # exactly equal, not merely close


def test_random_image_ops_keep_their_draws(tmp_path):
    items = tiny_images(tmp_path, count=4, size=30)
    dataset = ImageDataset(items, build_train_transform("rotate_flip", CONFIG))
    twin, finish = byte_variant(dataset)
    torch.manual_seed(3)
    single = torch.stack([dataset[i][0] for i in range(4)])
    torch.manual_seed(3)
    batched = finish(torch.stack([twin[i][0] for i in range(4)]))
    assert torch.equal(batched, single)


def test_other_tensor_steps_keep_the_per_image_path(tmp_path):
    items = tiny_images(tmp_path, count=2)
    erasing = ImageDataset(items, build_train_transform([{"op": "random_erasing"}], CONFIG))
    assert byte_variant(erasing) is None
    assert byte_variant(list(items)) is None  # not an ImageDataset (a decoded-image cache, say)
