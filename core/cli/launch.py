"""`tlzoo run SPEC --nproc N`: the same run as `torchrun --nproc-per-node N -m tlzoo run SPEC`, started here.

It goes through torch's own launcher API (torch.distributed.launcher.api.elastic_launch,
what torchrun calls), with a c10d rendezvous on a free loopback port and no
restarts: N worker processes run `tlzoo run` with the same arguments, and this
process waits for them. A worker that fails makes the launcher stop the others;
SIGTERM or Ctrl-C here is forwarded to the workers, which save `last` and stop.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from tlzoo.errors import TlzooError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_command() -> list[str]:
    """How a worker starts tlzoo: the `tlzoo` script (or a launcher script) that started this process, else -m."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.is_file() and script.name != "__main__.py" and (
            script.suffix == ".py" or script.name == "tlzoo"):
        return [str(script)]
    return ["-m", "tlzoo"]


def run_arguments(spec, set_, output, resume, allow_changes) -> list[str]:
    """`tlzoo run` arguments that repeat this command's, without --nproc."""
    args = ["run"] + ([str(spec)] if spec is not None else [])
    for item in set_:
        args += ["--set", item]
    if output is not None:
        args += ["--output", str(output)]
    if resume is not None:
        args += ["--resume", str(resume)]
    for item in allow_changes:
        args += ["--allow-changes", item]
    return args


def launch_local(nproc: int, args: list[str]) -> None:
    """Start `nproc` workers running `tlzoo <args>` and wait; raise with the workers' exit status if one failed."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from tlzoo.runtime.interrupts import Interrupted, signal_name

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TlzooError("--nproc inside a job that torchrun already started",
                         "drop --nproc: torchrun's --nproc-per-node says how many processes there are")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"tlzoo-{os.getpid()}",
                          rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{free_port()}", max_restarts=0,
                          monitor_interval=0.5, start_method="spawn")
    try:
        elastic_launch(config, sys.executable)(*worker_command(), *args)
    except SignalException as exc:
        raise Interrupted(int(exc.sigval), f"stopped by {signal_name(int(exc.sigval))}: the {nproc} processes were "
                                           "told to save their checkpoint and stop") from None
    except ChildFailedError as exc:
        codes = sorted({failure.exitcode for failure in exc.failures.values()})
        shown = ", ".join(f"rank {rank}: exit {failure.exitcode}" for rank, failure in sorted(exc.failures.items()))
        failed = TlzooError(f"{len(exc.failures)} of the {nproc} processes failed ({shown}); each one's message "
                            "is above", "a run directory with a last checkpoint continues with "
                                        "tlzoo run --resume RUN_DIR --nproc N")
        positive = [code for code in codes if code > 0]
        failed.exit_code = positive[-1] if positive else 1
        raise failed from None
