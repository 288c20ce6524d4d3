"""Where and how the engine computes: device, CPU threads, DataLoader workers, precision.

On a small CPU machine the seeds' loop oversubscribes: four DataLoader workers
decoding JPEGs next to a main process that already uses every core for its
intra-op threads. tlzoo keeps the main process on the cores it has and adds
workers only when there is a core to spare and enough images to amortise
starting them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

import torch

from tlzoo.errors import TlzooError

# below this many images, starting worker processes costs more than it saves
MIN_IMAGES_FOR_WORKERS = 256


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(value: int | str, num_images: int, cpus: int | None = None) -> int:
    """`data.num_workers`: an explicit count, or "auto": min(4, cpus - 1), none for tiny sets."""
    if value != "auto":
        return int(value)
    cpus = available_cpus() if cpus is None else cpus
    if num_images < MIN_IMAGES_FOR_WORKERS:
        return 0
    return max(0, min(4, cpus - 1))


# mallopt parameters, from glibc's malloc.h, and glibc's defaults for them (malloc/malloc.c)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024}
KEEP_FREED_BYTES = 1 << 30
_freed_memory_kept = False  # keep_freed_memory changed this process's allocator


def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (or a libc without mallopt)
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return mallopt


def keep_freed_memory() -> bool:
    """Let glibc keep freed activation buffers for reuse instead of unmapping them.

    glibc serves every allocation above 32 MiB (a lite0 activation at batch 32)
    with a fresh mmap and returns it with munmap on free, so each forward pass
    faults in and zero-fills hundreds of MiB again: on the 2-core test machine
    that was as much system time as user time, and an eval pass ran 2-3x slower
    than with the buffers kept. Serving them from the heap (no mmap) and
    trimming only above 1 GiB free keeps them. TLZOO_MALLOC=default opts out.
    """
    global _freed_memory_kept
    mallopt = None if os.environ.get("TLZOO_MALLOC") == "default" else _mallopt()
    if mallopt is None:
        return False
    _freed_memory_kept = True
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


def restore_malloc_defaults() -> bool:
    """Undo keep_freed_memory: glibc's default mmap count and trim threshold, and trim now.

    glibc offers no way back to its dynamic mmap threshold once any of these is
    set, so large blocks are then mmapped above the initial 128 KiB threshold, as
    at process start. False when keep_freed_memory had changed nothing.
    """
    global _freed_memory_kept
    mallopt = _mallopt()
    if not _freed_memory_kept or mallopt is None:
        return False
    _freed_memory_kept = False
    for parameter, value in GLIBC_DEFAULTS.items():
        mallopt(parameter, value)
    release_freed_memory()
    return True


@contextlib.contextmanager
def allocator_scope():
    """Whatever keep_freed_memory changes inside is undone on leaving, unless it was already in force."""
    kept_before = _freed_memory_kept
    try:
        yield
    finally:
        if not kept_before:
            restore_malloc_defaults()


def release_freed_memory() -> bool:
    """Return freed heap pages to the OS; call it just before DataLoader workers fork.

    A forked worker shares its parent's pages copy-on-write. As the parent then
    reuses its freed heap, each page it writes is copied and the worker keeps
    the old one, so a worker forked from a 5 GiB full fine-tuning process came
    to hold gigabytes it never reads (a 2-epoch run peaked at 10.8 GiB, twice
    the main process). Trimming first leaves the worker only live memory.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):  # not glibc
        return False


def configure_threads(cpus: int | None = None, keep_buffers: bool = True) -> int:
    """Intra-op threads = the cores this process may use (torch may count more).

    `keep_buffers`: keep freed activation buffers (see keep_freed_memory); right for
    forward-only passes, wrong when the whole backbone backpropagates: the saved
    activations of a backward pass vary in size, and kept heap memory fragments
    (a full fine-tune epoch grew from 6.3 to 8.3 GiB peak RSS, two epochs to 12.5).
    """
    if keep_buffers:
        keep_freed_memory()
    cpus = available_cpus() if cpus is None else cpus
    if torch.get_num_threads() != cpus:
        torch.set_num_threads(cpus)
    return cpus


def resolve_device(value: str, setting: str = "train.device") -> torch.device:
    """The torch device `value` names; errors name `setting`, where the user wrote it."""
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except RuntimeError:
        raise TlzooError(f"{setting} {value!r} is not a device", "use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TlzooError(f"{setting} is {value!r} but no CUDA GPU is available here",
                         f"set {setting} to 'auto' or 'cpu'")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for `device`'s queued work: a GPU runs kernels after the call that launched them has returned, so a
    clock read without this measures the launch, not the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(precision: str, device: torch.device):
    """A context that runs a pass in `precision` ('fp32' does nothing)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def one_thread():
    """Scores on fixed features multiply small matrices: a second thread gains little there and, on a busy
    machine, costs much (rank's cached lite0 features scored in 70 s with two threads, 25 s with one, at load 12)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
