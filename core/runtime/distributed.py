"""Running one spec in several processes under torchrun: the process group and the few collectives tlzoo needs.

torchrun (or `tlzoo run --nproc N`, which goes through torch's own launcher)
sets RANK, WORLD_SIZE and LOCAL_RANK in each worker's environment. Without
WORLD_SIZE (or with WORLD_SIZE=1) every helper here is a no-op and the single
process path runs exactly as it always did: `active()` is False, `is_main()`
True, `barrier()` returns, sums are the local values.

The process group is gloo on CPU and NCCL on CUDA (one GPU per local rank),
`train.distributed.backend` overrides it; `train.distributed.timeout_s` bounds
every collective, so a rank that stops answering ends the others instead of
leaving them waiting forever. Objects travel as JSON in byte tensors, never
pickled, so a rank only ever reads plain data from another.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import inspect
import json
import os
import sys

import torch

from tlzoo.errors import TlzooError

_group_owned = False  # this module initialised the default process group (and so destroys it)


def env_world_size() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise TlzooError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number",
                         "launch with torchrun, which sets it, or unset it") from None


def active() -> bool:
    """True inside a job of two or more processes whose process group is up."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and world_size() > 1


def world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if active() else 0


def local_world_size() -> int:
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))) if active() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes the run directory, the cache entries and the progress display."""
    return rank() == 0


def launched_worker() -> bool:
    """A worker process of torch's launcher (torchrun, `tlzoo run --nproc N`) in a job of several."""
    return env_world_size() > 1 and bool(os.environ.get("TORCHELASTIC_RUN_ID"))


def leave_worker() -> None:
    """End a launched worker whose work is done and saved, skipping the interpreter's finalization: there,
    gloo's threads sometimes abort the process ("terminate called without an active exception", exit -6:
    4 of 17 runs of tests/test_distributed.py's resume test on a 2-core Xeon), and the launcher then reports a
    finished run as failed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def choose_backend(asked: str, device_type: str) -> str:
    if asked == "auto":
        return "nccl" if device_type == "cuda" else "gloo"
    if asked == "nccl" and device_type != "cuda":
        raise TlzooError("train.distributed.backend is 'nccl', which needs CUDA GPUs, but the run is on "
                         f"{device_type}", "use backend 'auto' or 'gloo' on CPU")
    return asked


def local_device(device: torch.device) -> torch.device:
    """CUDA: this rank's own GPU (LOCAL_RANK); CPU stays CPU."""
    if device.type != "cuda" or not active():
        return device
    if local_rank() >= torch.cuda.device_count():
        raise TlzooError(f"local rank {local_rank()} has no GPU: this machine has {torch.cuda.device_count()}",
                         "start at most one process per GPU (torchrun --nproc-per-node)")
    torch.cuda.set_device(local_rank())
    return torch.device("cuda", local_rank())


@contextlib.contextmanager
def process_group(backend: str, timeout_s: float, device_type: str):
    """The job's process group for the duration of a run; nothing at all without WORLD_SIZE > 1."""
    global _group_owned
    if env_world_size() <= 1 or torch.distributed.is_initialized():
        yield
        return
    chosen = choose_backend(backend, device_type)
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise TlzooError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {name} is not set",
                             "start distributed runs with torchrun (or tlzoo run --nproc N), which sets them")
    try:
        torch.distributed.init_process_group(chosen, timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as exc:
        raise TlzooError(f"could not join the distributed job (backend {chosen}, "
                         f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}): {exc}",
                         "check that every node reaches the rendezvous endpoint, or raise "
                         "train.distributed.timeout_s") from None
    _group_owned = True
    try:
        yield
    finally:
        _group_owned = False
        with contextlib.suppress(Exception):  # a peer gone already: nothing left to tear down cleanly
            torch.distributed.destroy_process_group()


def collective_failure(exc: BaseException) -> bool:
    """An error from a collective because another rank died or stopped answering."""
    if isinstance(exc, getattr(torch.distributed, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(word in text for word in (
        "Connection closed by peer", "Connection reset by peer", "Gloo", "gloo", "NCCL", "timed out", "Broken pipe"))


def resume_command(run_dir) -> str:
    """The command that continues `run_dir` with this job's processes (inside an epoch only that many can)."""
    world = world_size()
    if world <= 1:
        return f"tlzoo run --resume {run_dir}"
    if local_world_size() == world:
        return f"tlzoo run --resume {run_dir} --nproc {world}"
    return f"tlzoo run --resume {run_dir} under the same torchrun command ({world} processes)"


def lost_peer_error(exc: BaseException) -> TlzooError:
    return TlzooError(f"rank {rank()} of {world_size()}: another process of the distributed job stopped or stopped "
                      f"answering ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); this process "
                      "stops too, and the run directory keeps its last complete checkpoint",
                      "see the first failing rank's message above; continue with "
                      + resume_command("RUN_DIR"))


def _device_for_collectives() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if active():
        torch.distributed.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The elementwise sum over ranks (a copy; the input is not changed); the input itself without a job."""
    if not active():
        return tensor
    out = tensor.detach().clone().to(_device_for_collectives())
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
    return out.to(tensor.device)


def all_reduce_max(value: int) -> int:
    if not active():
        return value
    out = torch.tensor([value], dtype=torch.long, device=_device_for_collectives())
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.MAX)
    return int(out.item())


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on at least one (a NaN loss, a stop request)."""
    return bool(all_reduce_max(int(bool(flag))))


def _bytes_tensor(obj) -> torch.Tensor:
    data = json.dumps(obj, sort_keys=True, allow_nan=True).encode()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def broadcast_object(obj):
    """Rank 0's JSON-able `obj` on every rank (JSON in a byte tensor: never unpickled)."""
    if not active():
        return obj
    device = _device_for_collectives()
    payload = _bytes_tensor(obj if is_main() else None).to(device)
    size = torch.tensor([payload.numel()], dtype=torch.long, device=device)
    torch.distributed.broadcast(size, 0)
    buffer = payload if is_main() else torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    torch.distributed.broadcast(buffer, 0)
    return json.loads(bytes(buffer.cpu().tolist()).decode())


def all_gather_object(obj) -> list:
    """Every rank's JSON-able `obj`, in rank order, on every rank."""
    if not active():
        return [obj]
    device = _device_for_collectives()
    payload = _bytes_tensor(obj).to(device)
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size())]
    torch.distributed.all_gather(sizes, torch.tensor([payload.numel()], dtype=torch.long, device=device))
    longest = max(int(s.item()) for s in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[:payload.numel()] = payload
    gathered = [torch.empty(longest, dtype=torch.uint8, device=device) for _ in range(world_size())]
    torch.distributed.all_gather(gathered, padded)
    return [json.loads(bytes(g[:int(s.item())].cpu().tolist()).decode()) for g, s in zip(gathered, sizes)]


def assert_same_everywhere(value, what: str, hint: str) -> None:
    """Refuse to go on when `value` (JSON-able) differs between ranks, naming the ranks that disagree."""
    if not active():
        return
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
    digests = all_gather_object(digest)
    odd = [index for index, other in enumerate(digests) if other != digests[0]]
    if odd:
        raise TlzooError(f"{what} differs between the processes of the distributed job (rank 0 and rank(s) "
                         f"{', '.join(map(str, odd))})", hint)


def shard(count: int) -> range:
    """This rank's share of `count` items for a pass that must see each item once: rank, rank + N, ..."""
    return range(rank(), count, world_size())


def threads_per_process(cpus: int) -> int:
    """Intra-op threads for one of the processes that share this machine's cores."""
    return max(1, cpus // local_world_size())


class TrainablePart(torch.nn.Module):
    """The part of a TransferModel a step trains, from stage `start` on, as one module DDP can wrap."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        return self.model.head(self.model.forward_stages(x, start))


class GradientSync:
    """DistributedDataParallel over the model's trainable part; rebuilt when a freeze phase changes what trains.

    DDP registers its gradient hooks for the parameters that require grad when it
    is built, so unfreezing a group needs a new wrapper. Buffers are not broadcast
    on every step: the frozen ones are equal everywhere, and `sync_buffers`
    hands rank 0's trained BatchNorm statistics to every rank before validation.
    """

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device
        self.trainable: tuple | None = None
        self.wrapped = None

    def __call__(self, x: torch.Tensor, start: int) -> torch.Tensor:
        from torch.nn.parallel import DistributedDataParallel

        trainable = tuple(p.requires_grad for p in self.model.parameters())
        if trainable != self.trainable:
            # no buffer broadcast before each forward (newer torch names the switch forward_sync_buffers), and
            # none at construction: every rank built or loaded the same weights, and an in-place copy would
            # make the activation cache think the frozen prefix changed
            accepted = inspect.signature(DistributedDataParallel).parameters
            options = {"forward_sync_buffers": False} if "forward_sync_buffers" in accepted else {"broadcast_buffers": False}
            if "init_sync" in accepted:
                options["init_sync"] = False
            self.wrapped = DistributedDataParallel(
                TrainablePart(self.model), device_ids=[self.device.index] if self.device.type == "cuda" else None,
                **options)
            self.trainable = trainable
        return self.wrapped(x, start)

    def sync_buffers(self) -> None:
        """Rank 0's buffers everywhere; one that is already equal is left untouched (its version unchanged)."""
        for buffer in self.model.buffers():
            received = buffer.detach().clone()
            torch.distributed.broadcast(received, 0)
            if not torch.equal(received, buffer):
                with torch.no_grad():
                    buffer.copy_(received)
