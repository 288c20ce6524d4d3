"""`tlzoo run SPEC --nproc N`: the same run as `torchrun --nproc-per-node N -m tlzoo run SPEC`, started here.

It goes through torch's own launcher API (torch.distributed.launcher.api.elastic_launch,
what torchrun calls), with a c10d rendezvous on loopback and no restarts: N worker
processes run `tlzoo run` with the same arguments, and this process waits for them.
Before any worker starts, what every worker would refuse is refused here, once: a
global batch N does not divide, more processes than cores (or GPUs), a run directory
another run is writing, a resume its spec may not continue (and a resume with nothing
left to train says so without starting any). The run directory is chosen here and handed to the workers,
so every message after a failure or a signal names it, and says how to resume only
when there is a checkpoint to resume from. The rendezvous store binds port 0 (the
kernel picks a free port, as `torchrun --standalone` does), so no other program can
take the port between choosing and binding it. A worker that fails makes the launcher
stop the others; SIGTERM or Ctrl-C here is forwarded to the workers, which save
`last` and stop; a launcher killed outright is noticed by its workers, which then
stop the same way (tlzoo.runtime.interrupts.stop_when_orphaned).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tlzoo.errors import TlzooError

RENDEZVOUS = "127.0.0.1:0"


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


def check_job(resolved, nproc: int) -> None:
    """Refuse, once and before any worker starts, a job every worker would refuse or that cannot run well."""
    from tlzoo.data.batches import local_batch_size
    from tlzoo.runtime.device import available_cpus, resolve_device

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TlzooError("--nproc inside a job that torchrun already started",
                         "drop --nproc: torchrun's --nproc-per-node says how many processes there are")
    device = resolve_device(resolved.spec.train.device)
    if device.type == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise TlzooError(f"--nproc {nproc}: this machine has {gpus} GPU(s), one per process",
                             f"use --nproc {gpus} or fewer")
    elif nproc > available_cpus():
        cpus = available_cpus()
        raise TlzooError(f"--nproc {nproc} on {cpus} CPU core(s): a process needs a core of its own (more only "
                         "wait for each other, and each holds its own copy of the model and the data loader)",
                         f"use --nproc {cpus} or fewer" + ("" if cpus > 1 else ", or leave --nproc out"))
    local_batch_size(resolved.spec.data.batch_size, nproc)


def job_run_dir(resolved, output: Path | None, resume: Path | None, allow_changes=()):
    """(the job's run directory, whether this call created it, the finished run's RunResult or None).

    A resume is checked here as each worker would check it (another process writing the folder, a spec
    that may not continue it, nothing left to train: said once, and nothing starts); a new run directory
    is chosen and created as rank 0 would.
    """
    from tlzoo.engine.run import choose_run_dir, finished_run
    from tlzoo.rundir import outputs
    from tlzoo.rundir.lock import check_free
    from tlzoo.rundir.resume import open_resume

    if resume is not None:
        check_free(Path(resume))
        resumed = open_resume(resume, outputs.resolved_spec_json(resolved), allow_changes)
        return Path(resume), False, finished_run(resumed, sys.stderr, resolved.spec.report.enabled)
    created = output is None or not Path(output).exists()
    return choose_run_dir(resolved, output, []), created, None


def resume_hint(run_dir: Path, nproc: int) -> str | None:
    """How to continue, when `run_dir` holds a checkpoint to continue from."""
    from tlzoo.rundir.checkpoint import weights_path

    if not weights_path(run_dir / "last").is_file():
        return None
    return f"continue with: tlzoo run --resume {run_dir} --nproc {nproc}"


def launch_local(nproc: int, args: list[str], run_dir: Path, created: bool) -> None:
    """Start `nproc` workers running `tlzoo <args>` and wait; raise with the workers' exit status if one failed."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from tlzoo.rundir import outputs
    from tlzoo.runtime.interrupts import Interrupted, signal_name

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"tlzoo-{os.getpid()}",
                          rdzv_backend="c10d", rdzv_endpoint=RENDEZVOUS, rdzv_configs={"is_host": True},
                          max_restarts=0, monitor_interval=0.5, start_method="spawn")
    try:
        elastic_launch(config, sys.executable)(*worker_command(), *args)
    except SignalException as exc:
        raise Interrupted(int(exc.sigval), f"stopped by {signal_name(int(exc.sigval))}: the {nproc} processes were "
                                           f"told to save their checkpoint in {run_dir} and stop",
                          resume_hint(run_dir, nproc)) from None
    except RendezvousError as exc:
        outputs.remove_unfinished(run_dir, remove_folder=created)
        raise TlzooError(f"could not start the {nproc} processes' rendezvous on 127.0.0.1 ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})",
                         "check that this machine's loopback interface works, or start the job with "
                         f"torchrun --standalone --nproc-per-node {nproc} -m tlzoo run ...") from None
    except ChildFailedError as exc:
        codes = sorted({failure.exitcode for failure in exc.failures.values()})
        shown = ", ".join(f"rank {rank}: exit {failure.exitcode}" for rank, failure in sorted(exc.failures.items()))
        outputs.remove_unfinished(run_dir, remove_folder=created)  # nothing to keep before a first checkpoint
        failed = TlzooError(f"{len(exc.failures)} of the {nproc} processes failed ({shown}); each one's message "
                            "is above", resume_hint(run_dir, nproc))
        positive = [code for code in codes if code > 0]
        failed.exit_code = positive[-1] if positive else 1
        raise failed from None
