"""The frozen-prefix activation cache: storage, keys, invalidation, and batches equal to the uncached path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from tlzoo.cache import FrozenPrefixSource, CacheSettings, reason_off
from tlzoo.cache.keys import digest, files_fingerprint, modules_fingerprint, transform_description
from tlzoo.cache.store import ActivationStore, MemoryBudget, read_meta
from tlzoo.data.batches import Batch, LoaderSource, SourceSetup
from support import build_tiny, split_tiny
from tlzoo.model.backbone import ClassifierHead, TransferModel


def tiny_images(folder: Path, count: int = 10, size: int = 16) -> list[tuple[Path, int]]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for index in range(count):
        path = folder / f"{index}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        items.append((path, index % 3))
    return items


EVAL = T.Compose([T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
RANDOM = T.Compose([T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4), T.ToTensor()])


def tiny_model() -> TransferModel:
    backbone = build_tiny(None)
    model = TransferModel(split_tiny(backbone.model), ClassifierHead(16, 3))
    return model.eval()


def settings_for(root: Path, logs: list, memory_mb: int = 64, exact: bool = True, **extra) -> CacheSettings:
    values = dict(root=root, persist=True, budget=MemoryBudget(memory_mb * 2**20), identity={"backbone": "tiny"},
                  device=torch.device("cpu"), precision="fp32", exact=exact, require_smaller=False, log=logs.append)
    values.update(extra)
    return CacheSettings(**values)


def source_for(items, root, logs, transform=EVAL, views=1, seed=3, batch_size=4, shuffle=True, model=None, **extra):
    setup = SourceSetup(items, transform, batch_size, 0, seed, shuffle=shuffle, deterministic=views == 1)
    model = model or tiny_model()
    return FrozenPrefixSource(LoaderSource(setup), model, settings_for(root, logs, **extra), "train", views), model


# -- storage ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("memory_mb", [16, 0])  # in RAM, and spilled to a memory-mapped file
def test_store_round_trip_in_ram_and_on_disk(tmp_path, dtype, memory_mb):
    budget = MemoryBudget(memory_mb * 2**20)
    store = ActivationStore.create(5, 2, (3, 4, 4), dtype, budget, tmp_path)
    assert store.in_memory == (memory_mb > 0)
    values = torch.randn(10, 3, 4, 4)
    rows, views = torch.arange(10) % 5, torch.arange(10) // 5
    store.write(rows, views, values)
    expected = values.to(getattr(torch, dtype)).float()
    assert torch.equal(store.read(rows, views), expected)
    assert store.publish(tmp_path / "final", {"key": "k"})
    meta = read_meta(tmp_path / "final")
    assert meta["shape"] == [5, 2, 3, 4, 4] and meta["dtype"] == dtype
    width = 4 if dtype == "float32" else 2  # 16-bit values on disk as 16-bit words
    assert (tmp_path / "final" / "values.bin").stat().st_size == 5 * 2 * 48 * width
    store.close()
    assert budget.remaining == memory_mb * 2**20  # RAM given back
    for reopen_budget, in_memory in ((MemoryBudget(2**30), True), (MemoryBudget(0), False)):
        again = ActivationStore.open(tmp_path / "final", meta, reopen_budget)
        assert again.in_memory == in_memory
        assert torch.equal(again.read(rows, views), expected)
        again.close()
    assert (tmp_path / "final" / "values.bin").exists()  # published stores outlive the run


def test_unpublished_store_leaves_no_files(tmp_path):
    store = ActivationStore.create(2, 1, (4,), "bfloat16", MemoryBudget(0), tmp_path)
    assert any(tmp_path.iterdir())
    store.close()
    assert not any(tmp_path.iterdir())


def test_truncated_published_store_is_not_used(tmp_path):
    store = ActivationStore.create(4, 1, (8,), "float32", MemoryBudget(2**20), tmp_path)
    store.write(torch.arange(4), torch.zeros(4, dtype=torch.long), torch.ones(4, 8))
    store.publish(tmp_path / "entry", {"key": "k"})
    store.close()
    values = tmp_path / "entry" / "values.bin"
    values.write_bytes(values.read_bytes()[:-4])
    assert ActivationStore.open(tmp_path / "entry", read_meta(tmp_path / "entry"), MemoryBudget(2**20)) is None


# -- keys ------------------------------------------------------------------------------------------------


def test_touching_or_changing_a_data_file_changes_the_key(tmp_path):
    items = tiny_images(tmp_path / "img", count=3)
    paths = [path for path, _ in items]
    before = files_fingerprint(paths)
    assert files_fingerprint(paths) == before
    stat = os.stat(paths[1])
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched, same bytes
    touched = files_fingerprint(paths)
    assert touched != before
    paths[2].write_bytes(paths[2].read_bytes() + b"\0")  # changed
    assert files_fingerprint(paths) not in (before, touched)
    assert files_fingerprint(paths[:2]) != files_fingerprint(paths[:2][::-1])  # order is part of it


def test_transform_description_is_stable_and_detects_addresses():
    text, stable = transform_description(T.Compose([T.Resize(20), T.CenterCrop(16)]))
    assert stable and "Resize" in text and "CenterCrop" in text
    assert transform_description(T.Compose([T.Resize(20), T.CenterCrop(16)]))[0] == text
    assert transform_description(T.Compose([T.Resize(24), T.CenterCrop(16)]))[0] != text
    assert transform_description(lambda image: image)[1] is False


def test_prefix_fingerprint_follows_weights_and_architecture():
    model = tiny_model()
    base = modules_fingerprint(list(model.stages[:2]))
    assert modules_fingerprint(list(tiny_model().stages[:2])) == base
    assert modules_fingerprint(list(model.stages[:1])) != base
    with torch.no_grad():
        model.stages[1][0].weight[0, 0, 0, 0] += 1e-3
    assert modules_fingerprint(list(model.stages[:2])) != base


def test_boundary_transform_and_files_each_change_the_source_key(tmp_path):
    items = tiny_images(tmp_path / "img", count=4)
    logs = []
    source, _ = source_for(items, tmp_path / "cache", logs)
    key1, key2 = digest(source.key_parts(1)), digest(source.key_parts(2))
    assert key1 != key2 and digest(source.key_parts(1)) == key1
    other, _ = source_for(items, tmp_path / "cache", logs, transform=T.Compose([T.ToTensor()]))
    assert digest(other.key_parts(1)) != key1
    fewer, _ = source_for(items[:3], tmp_path / "cache", logs)
    assert digest(fewer.key_parts(1)) != key1
    bf16, _ = source_for(items, tmp_path / "cache", logs, precision="bf16")
    assert digest(bf16.key_parts(1)) != key1


# -- the source ------------------------------------------------------------------------------------------


def run_rest(model, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        return model.head(model.forward_stages(batch.x, batch.start))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_cached_batches_equal_uncached_ones_in_the_same_order(tmp_path, k):
    items = tiny_images(tmp_path / "img", count=10)
    logs = []
    source, model = source_for(items, tmp_path / "cache", logs, batch_size=4)
    plain = source.base
    assert len(source) == len(plain) == 3
    for epoch in (0, 1):
        cached = list(source.epoch(epoch, k))
        uncached = list(plain.epoch(epoch, k))
        assert [b.start for b in cached] == [k] * 3
        for a, b in zip(cached, uncached):
            assert torch.equal(a.y, b.y)
            assert torch.allclose(run_rest(model, a), run_rest(model, b), atol=1e-6)
    orders = [torch.cat([b.y for b in source.epoch(e, k)]) for e in range(4)]
    assert any(not torch.equal(orders[0], o) for o in orders[1:])  # shuffled differently per epoch
    assert sum("computing" in line for line in logs) == 1  # computed once for all epochs


def test_nothing_frozen_passes_through_to_the_plain_loader(tmp_path):
    items = tiny_images(tmp_path / "img", count=6)
    source, _ = source_for(items, tmp_path / "cache", [])
    batches = list(source.epoch(0, 0))
    assert [b.start for b in batches] == [0, 0] and batches[0].x.shape[1:] == (3, 16, 16)
    assert source.store is None


def test_a_second_source_reuses_the_published_cache_until_a_file_changes(tmp_path):
    items = tiny_images(tmp_path / "img", count=6)
    logs = []
    first, _ = source_for(items, tmp_path / "cache", logs)
    values = torch.cat([b.x for b in first.epoch(0, 2)])
    first.close()
    second, _ = source_for(items, tmp_path / "cache", logs)
    assert torch.equal(torch.cat([b.x for b in second.epoch(0, 2)]), values)
    assert any("reusing stage-2" in line for line in logs)
    second.close()
    stat = os.stat(items[0][0])
    os.utime(items[0][0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    logs.clear()
    third, _ = source_for(items, tmp_path / "cache", logs)
    list(third.epoch(0, 2))
    assert not any("reusing" in line for line in logs) and any("computing" in line for line in logs)


def test_changed_prefix_weights_rebuild_the_store(tmp_path):
    items = tiny_images(tmp_path / "img", count=6)
    logs = []
    source, model = source_for(items, tmp_path / "cache", logs)
    before = torch.cat([b.x for b in source.epoch(0, 2)])
    with torch.no_grad():
        model.stages[0][0].weight.mul_(0.5)  # as if stage 0 had trained in an earlier epoch
    after = torch.cat([b.x for b in source.epoch(0, 2)])
    assert sum("computing" in line for line in logs) == 2
    assert not torch.allclose(before, after)


def test_random_views_are_reproducible_and_cycle_over_epochs(tmp_path):
    items = tiny_images(tmp_path / "img", count=6)
    a, _ = source_for(items, tmp_path / "a", [], transform=RANDOM, views=3, shuffle=False, batch_size=6)
    b, _ = source_for(items, tmp_path / "b", [], transform=RANDOM, views=3, shuffle=False, batch_size=6)
    c, _ = source_for(items, tmp_path / "c", [], transform=RANDOM, views=3, shuffle=False, batch_size=6, seed=99)
    first = [next(iter(a.epoch(e, 1))).x for e in range(4)]
    assert torch.equal(next(iter(b.epoch(0, 1))).x, first[0])  # same seed, fresh cache: same views
    assert not torch.equal(next(iter(c.epoch(0, 1))).x, first[0])  # another seed: other views
    assert torch.equal(first[3], first[0])  # epoch e and e + views show the same view
    assert not torch.equal(first[1], first[0]) and not torch.equal(first[2], first[1])
    assert a.store.data.shape[:2] == (6, 3)


def test_each_boundary_makes_as_many_views_as_epochs_read_it(tmp_path):
    """freeze_unfreeze: 3 epochs at the top boundary, then 2 at a lower one; no view is made and never read."""
    items = tiny_images(tmp_path / "img", count=6)
    source, _ = source_for(items, tmp_path / "cache", [], transform=RANDOM, views={2: 3, 1: 2}, shuffle=False,
                           batch_size=6)
    top = [next(iter(source.epoch(e, 2))).x for e in range(3)]
    assert source.store.data.shape[:2] == (6, 3)
    assert all(not torch.equal(top[i], top[j]) for i, j in ((0, 1), (1, 2), (0, 2)))  # three epochs, three views
    lower = [next(iter(source.epoch(e, 1))).x for e in range(3, 5)]
    assert source.store.data.shape[:2] == (6, 2)
    assert not torch.equal(lower[0], lower[1])


def test_building_views_leaves_the_global_rng_alone(tmp_path):
    items = tiny_images(tmp_path / "img", count=4)
    source, _ = source_for(items, tmp_path / "cache", [], transform=RANDOM, views=2)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    list(source.epoch(0, 2))
    assert torch.equal(torch.rand(3), expected)


def test_training_store_is_16_bit_unless_exactness_is_asked_for(tmp_path):
    items = tiny_images(tmp_path / "img", count=4)
    exact, _ = source_for(items, tmp_path / "a", [], exact=True)
    lossy, _ = source_for(items, tmp_path / "b", [], exact=False)
    list(exact.epoch(0, 3)), list(lossy.epoch(0, 3))
    assert exact.store.dtype_name == "float32" and lossy.store.dtype_name == "bfloat16"


def test_auto_mode_skips_a_boundary_bigger_than_the_image(tmp_path):
    items = tiny_images(tmp_path / "img", count=4)
    logs = []
    source, _ = source_for(items, tmp_path / "cache", logs, require_smaller=True)
    assert all(b.start == 0 for b in source.epoch(0, 1))  # stage 1 output: 8x16x16 > 3x16x16
    assert any("not caching stage-1" in line for line in logs)
    assert all(b.start == 3 for b in source.epoch(0, 3))  # pooled features: 16 values


def test_bn_train_and_disabled_cache_are_off_with_a_reason():
    class Spec:
        class cache:
            enabled = "auto"

        class train:
            bn = "train"

            class strategy:
                name = "head_only"

    assert "train.bn is 'train'" in reason_off(Spec, [3, 3])
    Spec.train.bn = "frozen"
    assert reason_off(Spec, [3, 3]) is None
    assert "freezes no whole stage" in reason_off(Spec, [0, 0])
    Spec.cache.enabled = False
    assert "cache.enabled is false" in reason_off(Spec, [3, 3])


def test_frozen_epochs_are_counted_per_boundary_not_listed_per_epoch():
    from tlzoo.cache import frozen_epochs
    from tlzoo.model.freeze import FreezeStrategy, Phase, plan_run

    class HeadThenAll(FreezeStrategy):
        def phase(self, epoch, num_groups):
            return Phase(1 if epoch < 3 else num_groups)

    counts = frozen_epochs(plan_run(tiny_model(), HeadThenAll(), 10))
    assert dict(counts) == {3: 3, 0: 7}  # one entry a boundary, whatever the epoch count


def test_view_inputs_decode_a_batch_in_threads_in_order_and_random_views_alike(tmp_path):
    """ViewInputs.__getitems__ (what a DataLoader's fetcher calls): deterministic views decoded in threads give
    what one-by-one gives, in order; seeded random views come out as their own seed makes them, batch or not."""
    from tlzoo.cache.prefix import ViewInputs
    from tlzoo.data.dataset import ImageDataset

    rng = np.random.default_rng(0)
    items = []
    for number in range(9):
        path = tmp_path / f"{number}.jpg"
        Image.fromarray(rng.integers(0, 256, (60 + number, 80, 3), dtype=np.uint8)).save(path)
        items.append((path, number % 3))
    eval_set = ImageDataset(items, T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()]))
    random_set = ImageDataset(items, T.Compose([T.RandomResizedCrop(24), T.ToTensor()]))
    pairs = [(row, 0) for row in range(9)][::-1]
    for dataset, seed in ((eval_set, None), (random_set, 7)):
        inputs = ViewInputs(dataset, pairs, seed)
        batch = inputs.__getitems__(list(range(9)))
        single = [inputs[index] for index in range(9)]
        assert [(row, view) for _, row, view in batch] == pairs
        assert all(torch.equal(a[0], b[0]) for a, b in zip(batch, single))
