"""The frozen-prefix cache under torchrun: each image's activations computed once in the whole job.

Every rank computes the (row, view) pairs rank, rank + N, ... of a missing
entry into a store of its own and publishes it atomically (a rename, as any
entry) as `<cache dir>/activations/shards-<key>/rank-<r>`. After a barrier,
rank 0 copies every share into the full entry and publishes it under the usual
key, inside the key's lock, so a later single-process run (or another job)
reuses it; the other ranks then open that entry (RAM or a memory map whose
pages the ranks of one machine share). An entry that is not published (a
transform whose key is not stable) is assembled from the shares by every rank.
The shares are removed once every rank holds its store. The cache folder must
be one every rank sees: on several machines, a shared file system.
"""

from __future__ import annotations

import shutil
import time

import torch

from tlzoo.cache.store import ActivationStore, key_lock, read_meta
from tlzoo.errors import TlzooError
from tlzoo.runtime import distributed


def shard_folder(source, key: str):
    return source.settings.root / f"shards-{key}"


def build_sharded(source, k: int, key: str, key_parts: dict, found: ActivationStore | None):
    """The store for boundary k on every rank (None on every rank when it is not worth keeping)."""
    if not distributed.any_rank(found is None):
        return found  # every rank reuses the published entry
    if found is not None:
        found.close()
    started = time.perf_counter()
    share = compute_share(source, k)
    if share is None:
        return None
    folder = shard_folder(source, key)
    mine = folder / f"rank-{distributed.rank()}"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(mine, ignore_errors=True)  # left by a job that was killed
    share.publish(mine, {"key": key, "pairs": share.pairs})
    distributed.barrier()
    store = None
    try:
        if distributed.is_main():
            source.log_built(k, len(source.base.items), started)
            if source.stable:
                with key_lock(source.settings.root, key, source.settings.log):
                    store = source.open_published(key) or assemble(source, k, folder)
                    store.publish(source.settings.root / key, source.entry_meta(k, key, key_parts))
        distributed.barrier()
        if store is None and source.stable:
            store = source.open_published(key)
        if store is None:
            store = assemble(source, k, folder)
    finally:
        share.close()
    distributed.barrier()  # every rank holds its store: the shares can go
    if distributed.is_main():
        shutil.rmtree(folder, ignore_errors=True)
    return store


def compute_share(source, k: int) -> ActivationStore | None:
    """This rank's pairs computed into a store of their own; rank 0 decides whether the entry is worth it."""
    base, views = source.base, source.views_at(k)
    pairs = [(row, view) for view in range(views) for row in range(len(base.items))]
    mine = [pairs[index] for index in distributed.shard(len(pairs))]
    share, decided = None, False
    outputs = source.prefix_outputs(k, mine)
    try:
        for position, _views, out, x in enumerate_rows(outputs):
            if not decided:
                decided = True
                keep = distributed.broadcast_object(source.worth_storing(k, out, x) if distributed.is_main() else None)
                if not keep:
                    source.settings.skipped.add((source.role, k))
                    return None
                share = ActivationStore.create(len(mine), 1, tuple(out.shape[1:]), source.storage_dtype(out.dtype),
                                               source.settings.budget, source.settings.root)
                share.pairs = mine
                source.settings.log(f"cache: computing stage-{k} activations {tuple(out.shape[1:])} of "
                                    f"{len(base.items)} {source.role} images x {views} view(s), shared between "
                                    f"{distributed.world_size()} processes")
            share.write(position, torch.zeros_like(position), out)
    except BaseException:
        if share is not None:
            share.close()
        raise
    finally:
        outputs.close()
    if not decided:  # more ranks than pairs: this rank had none, and still takes part in the decision
        raise TlzooError(f"the {source.role} split has fewer images than the job has processes "
                         f"({len(pairs)} < {distributed.world_size()})", "run with fewer processes")
    return share


def enumerate_rows(outputs):
    """(positions within this rank's share, views, out, x) for each batch of `outputs`."""
    done = 0
    for rows, views, out, x in outputs:
        positions = torch.arange(done, done + rows.numel())
        done += rows.numel()
        yield positions, views, out, x


def assemble(source, k: int, folder) -> ActivationStore:
    """The full entry from every rank's share."""
    settings, items = source.settings, len(source.base.items)
    store = None
    for rank in range(distributed.world_size()):
        part_folder = folder / f"rank-{rank}"
        meta = read_meta(part_folder)
        part = ActivationStore.open(part_folder, meta, settings.budget) if meta is not None else None
        if part is None:
            raise TlzooError(f"cache: rank {distributed.rank()} cannot read rank {rank}'s share of the activation "
                             f"cache in {part_folder}",
                             "on several machines cache.dir must be a folder that every machine sees (a shared "
                             "file system); or set cache.enabled to false")
        try:
            if store is None:
                store = ActivationStore.create(items, source.views_at(k), tuple(part.data.shape[2:]), part.dtype_name,
                                               settings.budget, settings.root)
            pairs = torch.tensor(meta["pairs"], dtype=torch.long).reshape(-1, 2)
            store.data[pairs[:, 0], pairs[:, 1]] = part.data[:, 0]
        finally:
            part.close()
    return store
