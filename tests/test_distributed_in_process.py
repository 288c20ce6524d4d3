"""Distributed pieces checked in one process, rank and world size faked and collectives stubbed: how a global
batch is shared between processes (sizes, order, an odd last batch, the loss), validation shards, a NaN on
another rank, resuming with another process count, a forwarded Ctrl-C. Real worker processes: test_distributed.py."""

from __future__ import annotations

import signal

import pytest
import torch


def test_batch_size_must_divide_between_processes(monkeypatch):
    from tlzoo.data import batches
    from tlzoo.errors import TlzooError

    monkeypatch.setattr(batches.distributed, "world_size", lambda: 2)
    assert batches.local_batch_size(8) == 4
    with pytest.raises(TlzooError, match=r"data.batch_size is 5.*2 processes") as caught:
        batches.local_batch_size(5)
    assert "multiple of 2" in caught.value.hint


def test_global_order_sampler_shards_the_single_process_order(monkeypatch):
    from torch.utils.data import DataLoader

    from tlzoo.data import batches

    single = list(DataLoader(range(10), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(7)))
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(batches.distributed, "world_size", lambda: 2)
        monkeypatch.setattr(batches.distributed, "rank", lambda rank=rank: rank)
        generator = torch.Generator().manual_seed(7)
        sampler = batches.GlobalOrderSampler(10, generator, 4)
        shares.append(list(DataLoader(range(10), batch_size=2, sampler=sampler, generator=generator)))
    for whole, part0, part1 in zip(single, *shares):
        assert sorted(whole.tolist()) == sorted(part0.tolist() + part1.tolist())


def test_an_odd_last_batch_is_the_single_process_one_with_its_padding_marked(monkeypatch):
    """45 images in global batches of 16 on 2 ranks: the shares of each batch are the single-process batch,
    and the one padding row (a repeated image) is marked so that the loss does not count it."""
    from torch.utils.data import DataLoader

    from tlzoo.data import batches

    single = list(DataLoader(range(45), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(3)))
    shares = []
    monkeypatch.setattr(batches.distributed, "world_size", lambda: 2)
    for rank in (0, 1):
        monkeypatch.setattr(batches.distributed, "rank", lambda rank=rank: rank)
        generator = torch.Generator().manual_seed(3)
        loader = DataLoader(range(45), batch_size=8, sampler=batches.GlobalOrderSampler(45, generator, 16),
                            generator=generator)
        shares.append([(rows.tolist(), batches.real_rows(loader, index, len(rows)))
                       for index, rows in enumerate(loader)])
    assert [len(rows) for rows, _ in shares[0]] == [8, 8, 7] == [len(rows) for rows, _ in shares[1]]
    assert [real for _, real in shares[0]] == [8, 8, 7] and [real for _, real in shares[1]] == [8, 8, 6]
    for whole, (rows0, real0), (rows1, real1) in zip(single, *shares):
        assert sorted(whole.tolist()) == sorted(rows0[:real0] + rows1[:real1])
    assert batches.kept_images(45, 16, 2) == 45 and batches.kept_images(33, 16, 2) == 32  # 1 left: dropped
    assert batches.kept_images(17, 16, 1) == 16 and batches.kept_images(1, 16, 1) == 1


@pytest.mark.parametrize("class_weights, smoothing, mixed", [(False, 0.0, False), (True, 0.1, False),
                                                              (True, 0.0, True)])
def test_shares_of_an_odd_global_batch_give_the_single_process_gradient(monkeypatch, class_weights, smoothing,
                                                                         mixed):
    """Two ranks' ShareOfGlobalMean gradients, averaged as DDP does, equal the single-process gradient of a
    13-image last batch (rank 0: 7 images; rank 1: 6 and a padding row), with class weights, label smoothing,
    and mixing (the same two label sets on both sides)."""
    import tlzoo.engine.shared_loss as shared_loss
    from tlzoo.engine.mixing import Mixed

    torch.manual_seed(0)
    logits, y = torch.randn(13, 4, dtype=torch.float64), torch.randint(0, 4, (13,))
    other = torch.randint(0, 4, (13,))
    criterion = torch.nn.CrossEntropyLoss(weight=torch.rand(4, dtype=torch.float64) + 0.5 if class_weights else None,
                                          label_smoothing=smoothing)

    def loss(function, rows):
        return Mixed(None, other[rows], 0.3).loss(function, logits_of[id(rows)], y[rows]) if mixed else \
            function(logits_of[id(rows)], y[rows])

    whole = logits.clone().requires_grad_()
    everything = torch.arange(13)
    logits_of = {id(everything): whole}
    loss(criterion, everything).backward()

    shares = {0: (torch.tensor([0, 2, 4, 6, 8, 10, 12]), 7), 1: (torch.tensor([1, 3, 5, 7, 9, 11, 0]), 6)}
    monkeypatch.setattr(shared_loss, "world_size", lambda: 2)
    sent = []  # 1. what each rank puts into the all-reduce
    monkeypatch.setattr(shared_loss, "all_reduce_sum", lambda local: sent.append(local) or local)
    for rows, real in shares.values():
        logits_of[id(rows)] = logits[rows]
        loss(shared_loss.ShareOfGlobalMean(criterion, real), rows)
    calls = len(sent) // 2
    answers = iter([sent[i] + sent[calls + i] for i in range(calls)] * 2)  # 2. what the all-reduce gives back
    monkeypatch.setattr(shared_loss, "all_reduce_sum", lambda local: next(answers))
    averaged = torch.zeros_like(logits)
    for rows, real in shares.values():
        mine = logits[rows].clone().requires_grad_()
        logits_of[id(rows)] = mine
        share = shared_loss.ShareOfGlobalMean(criterion, real)
        loss(share, rows).backward()
        averaged.index_add_(0, rows[:real], mine.grad[:real] / 2)  # DDP's average; padding rows have none
        assert share.images == 13 and not mine.grad[real:].any()
    assert torch.allclose(averaged, whole.grad, atol=1e-12), (averaged - whole.grad).abs().max()


def test_validation_shards_count_every_image_once(monkeypatch):
    from tlzoo.data import batches

    monkeypatch.setattr(batches.distributed, "world_size", lambda: 2)
    rows = []
    for rank in (0, 1):
        monkeypatch.setattr(batches.distributed, "rank", lambda rank=rank: rank)
        rows += list(batches.ShardSampler(9))
    assert sorted(rows) == list(range(9))


def test_a_nan_loss_on_another_rank_stops_this_one_before_the_update(tiny_model, monkeypatch):
    from types import SimpleNamespace

    import tlzoo.runtime.distributed as distributed
    from tlzoo.data.batches import Batch
    from tlzoo.engine.loop import LoopConfig, Trainer
    from tlzoo.errors import TlzooError

    optimizer = torch.optim.SGD(tiny_model.parameters(), lr=0.1)
    state = SimpleNamespace(model=tiny_model, optimizer=optimizer, step=4)
    config = LoopConfig(1, 0, "frozen", torch.device("cpu"), "fp32", 3)
    trainer = Trainer(state, None, torch.nn.CrossEntropyLoss(), None, None, config, None,
                      sync=lambda x, start: tiny_model.head(tiny_model.forward_stages(x, start)))
    seen = []
    monkeypatch.setattr(distributed, "any_rank", lambda flag: seen.append(flag) or True)  # rank 1 saw a NaN
    before = [p.detach().clone() for p in tiny_model.parameters()]
    with pytest.raises(TlzooError, match="on another process of the job at epoch 2, step 5"):
        trainer.train_step(Batch(torch.rand(2, 3, 16, 16), torch.tensor([0, 1])), 0, 1)
    assert seen == [False]  # this rank's own loss was finite, and it still stopped
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_model.parameters()))


def test_resume_inside_an_epoch_with_another_process_count_is_refused(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from tlzoo.errors import TlzooError
    from tlzoo.rundir import resume

    resumed = SimpleNamespace(run_dir=tmp_path, training={"world_size": 2, "counters": {"epoch": 1}})
    monkeypatch.setattr(resume.distributed, "world_size", lambda: 1)
    resume.check_world_size(resumed, {"batch": 0})  # an epoch boundary: any number of processes continues
    with pytest.raises(TlzooError, match="with 1 process.*inside epoch 2 with 2 process") as caught:
        resume.check_world_size(resumed, {"batch": 3})
    assert "--nproc 2" in caught.value.hint


def test_ctrl_c_forwarded_by_the_launcher_is_not_a_second_signal():
    """A terminal's Ctrl-C reaches every worker, then torchrun forwards it again: one request, not 'stop at once'."""
    import io

    from tlzoo.runtime.interrupts import Interrupted, StopRequest

    for window, repeat_stops_at_once in ((2.0, False), (0.0, True)):
        stop = StopRequest(io.StringIO(), grace_floor=60, backstop_seconds=3600)  # no timer ends pytest
        stop.armed, stop.duplicate_seconds = True, window
        stop._handle(signal.SIGINT, None)  # recorded: the loop saves at its next safe point
        try:
            stop._handle(signal.SIGINT, None)
            stopped = False
        except Interrupted:
            stopped = True
        finally:
            for timer in stop._timers:
                timer.cancel()
        assert stopped == repeat_stops_at_once and stop.signum == signal.SIGINT
