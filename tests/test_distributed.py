"""Distributed training under torchrun (gloo on CPU): tiny specs, real worker processes.

The reference is one job of two processes started as two single-process nodes
that meet through a c10d rendezvous on 127.0.0.1 (torchrun --nnodes=2). The
single-process run of the same spec must give the same metrics: the global
batches are the same images (the sampler shards the single-process order), so
the two differ only in the order floating-point sums are taken (DDP averages
two half-batch gradients where one process takes the mean of the whole batch;
validation sums two shares). The spec trains the head only (BatchNorm layers
frozen) and has no dropout or random augmentation, whose random draws differ
per rank; hence the tight tolerance.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reliability_support import HERE, make_images, write_spec

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TOLERANCE = 1e-4  # float reduction order only: see the module docstring
SPEC = dict(head={"dropout": 0.0}, data={"augment": "none", "batch_size": 4},
            train={"strategy": "head_only", "epochs": 4, "optimizer": {"name": "adamw", "lr": 0.05}})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(**extra) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TLZOO_CPU_BF16": "0", **extra}


def start(command: list[str], cwd: Path, **extra) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=cwd, env=environment(**extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_job(process: subprocess.Popen) -> None:
    """kill -9 of the launcher and every worker (torch starts each worker in a session of its own)."""
    for pid in [*descendants(process.pid), process.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def finish(process: subprocess.Popen, timeout: float = 150) -> tuple[int, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_job(process)
        out, err = process.communicate()
        raise AssertionError(f"the job did not end within {timeout} s (a hang):\n{err[-3000:]}")
    return process.returncode, out + err


def nproc_run(folder: Path, *args: str, **extra) -> subprocess.Popen:
    """`tlzoo run ... --nproc 2` (torch's elastic launcher), the tiny backbone registered in every worker."""
    return start([sys.executable, str(HERE), "run", *args, "--nproc", "2"], folder, **extra)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the job ended ({process.returncode}) early:\n{process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            kill_job(process)
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            found += map(int, children)
            queue += map(int, children)
    return found


def worker_of_rank(launcher: int, rank: int) -> int:
    for pid in descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID" in b"".join(env):
            return pid
    raise AssertionError(f"no worker of rank {rank} under {launcher}")


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir: Path, which: str = "last") -> dict:
    return {k: v for k, v in load_file(run_dir / f"{which}.safetensors").items() if not k.startswith(("rng.",))}


def load_training(run_dir: Path) -> dict:
    from tlzoo.rundir.checkpoint import embedded_meta

    return embedded_meta(run_dir / "last.safetensors")["training"]


def metrics_without_time(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in line.items() if k != "seconds"} for line in metrics(run_dir)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(data root, single-process run dir, two-node run dir, cache dir, folder): the runs every test compares with."""
    folder = tmp_path_factory.mktemp("distributed")
    root = make_images(folder / "data", classes=3, train=8, val=3)
    cache = folder / "cache"
    write_spec(folder, root, **SPEC, cache={"enabled": True, "dir": str(cache)})
    # one process, the same spec, its own cache folder (a later test checks reuse of the job's entries)
    write_spec(folder, root, name="single.json", **SPEC, cache={"enabled": True, "dir": str(folder / "cache-single")})
    single = start([sys.executable, str(HERE), "run", "single.json", "--output", "runs/one"], folder)
    port, nodes = free_port(), []
    for node in (0, 1):  # two "machines", one process each, meeting on loopback
        nodes.append(start(TORCHRUN + ["--nnodes=2", f"--node-rank={node}", "--rdzv-backend=c10d",
                                       f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=tlzoo-test",
                                       "--nproc-per-node=1", str(HERE), "run", "spec.json",
                                       "--output", "runs/two"], folder))
    results = [finish(node) for node in nodes]
    for code, text in [*results, finish(single)]:
        assert code == 0, text[-3000:]
    return root, folder / "runs" / "one", folder / "runs" / "two", cache, folder, results


def test_two_nodes_on_loopback_match_one_process(reference):
    _, one, two, _, _, results = reference
    single, double = metrics(one), metrics(two)
    assert len(single) == len(double) == 4
    for a, b in zip(single, double):
        for key in ("train_loss", "val_loss"):
            assert abs(a[key] - b[key]) < TOLERANCE, (key, a, b)
        assert a["val_top1"] == b["val_top1"]
    first, second = weights(one), weights(two)
    assert max((first[k] - second[k]).abs().max().item() for k in first) < TOLERANCE
    # every epoch saw all 9 validation images once, though 9 does not split evenly between 2 ranks
    confusion = json.loads((two / "summary.json").read_text())["confusion_matrix"]
    assert sum(map(sum, confusion)) == 9
    outputs = [text for _, text in results]
    assert sum("best epoch" in text for text in outputs) == 1  # one process speaks for the job


def test_only_rank_zero_writes(reference):
    _, one, two, _, folder, _ = reference
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["one", "two"]  # no second run directory
    assert json.loads((two / "spec.json").read_text())["train"] == json.loads((one / "spec.json").read_text())["train"]


def test_cache_built_by_the_job_is_reused_by_one_process(reference, capsys, monkeypatch):
    from reliability_support import cli

    monkeypatch.setenv("TLZOO_CPU_BF16", "0")
    root, _, _, cache, folder, _ = reference
    assert not list(cache.joinpath("activations").glob("shards-*"))  # the shares are gone once assembled
    spec = write_spec(folder, root, name="reuse.json", **SPEC, cache={"enabled": True, "dir": str(cache)})
    code, err = cli(capsys, "run", str(spec), "--output", str(folder / "runs-reuse"), "--set", "train.epochs=1")
    assert code == 0, err
    assert err.count("cache: reusing stage-2 activations") == 2 and "computing" not in err  # train and val


def test_sigterm_then_kill9_then_resume_with_two_processes_equals_uninterrupted(reference):
    _, _, two, _, folder, _ = reference
    run_dir, marker = folder / "runs" / "resumed", folder / "paused"
    # 1. SIGTERM to `tlzoo run --nproc 2` inside epoch 2: every rank stops at the same step, rank 0 saves last
    job = nproc_run(folder, "spec.json", "--output", str(run_dir), TLZOO_TEST_PAUSE_AT_STEP="9",
                    TLZOO_TEST_PAUSE_SECONDS="3", TLZOO_TEST_MARKER=str(marker))
    wait_for(marker, job)
    job.send_signal(signal.SIGTERM)
    code, text = finish(job, 90)
    assert code == 143, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert f"continue with: tlzoo run --resume {run_dir} --nproc 2" in text, text[-3000:]
    last = json.loads((run_dir / "last.json").read_text())
    training = load_training(run_dir)
    assert training["position"]["batch"] == 3 and training["world_size"] == 2 and len(training["ranks"]) == 2
    assert last["epoch"] == 1
    # 2. resume under torchrun; kill -9 the whole job inside epoch 4
    marker.unlink()
    job = start(TORCHRUN + ["--nproc-per-node=2", "--master-addr=127.0.0.1", f"--master-port={free_port()}",
                            str(HERE), "run", "--resume", str(run_dir)], folder,
                TLZOO_TEST_PAUSE_AT_STEP="20", TLZOO_TEST_MARKER=str(marker))
    wait_for(marker, job)
    kill_job(job)
    job.wait(30)
    assert load_training(run_dir)["counters"]["epoch"] == 3  # last is epoch 3's, whole
    # 3. resume again to the end: the same weights and metrics as the run that never stopped
    code, text = finish(nproc_run(folder, "--resume", str(run_dir)))
    assert code == 0, text[-3000:]
    assert metrics_without_time(run_dir) == metrics_without_time(two)
    resumed, uninterrupted = weights(run_dir), weights(two)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


def test_a_rank_killed_mid_epoch_stops_the_job_cleanly(reference):
    _, _, _, _, folder, _ = reference
    run_dir, marker = folder / "runs" / "killed", folder / "paused-kill"
    job = nproc_run(folder, "spec.json", "--output", str(run_dir), TLZOO_TEST_PAUSE_AT_STEP="9",
                    TLZOO_TEST_PAUSE_SECONDS="3", TLZOO_TEST_MARKER=str(marker))
    wait_for(marker, job)
    started = time.monotonic()
    os.kill(worker_of_rank(job.pid, 1), signal.SIGKILL)
    code, text = finish(job, 90)
    assert code != 0 and time.monotonic() - started < 60, text[-3000:]
    assert "processes failed" in text and "Traceback" not in text, text[-3000:]
    assert load_training(run_dir)["counters"]["epoch"] == 1  # epoch 1's last, whole
    assert not list(run_dir.glob("*.tmp*"))


def gone(pid: int) -> bool:
    """Ended (a zombie waiting for a reaper counts: it runs nothing and holds no lock)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def test_workers_stop_and_save_when_their_launcher_is_killed(reference):
    """torch gives each worker a session of its own: kill -9 of `tlzoo run --nproc 2` alone used to leave both
    training (and writing the run directory). Now they notice, save `last` at the same step and end."""
    from tlzoo.rundir.lock import check_free

    _, _, _, _, folder, _ = reference
    run_dir, marker = folder / "orphaned", folder / "paused-orphaned"
    job = nproc_run(folder, "spec.json", "--output", str(run_dir), "--set", "train.epochs=1000",
                    TLZOO_TEST_PAUSE_AT_STEP="9", TLZOO_TEST_PAUSE_SECONDS="2", TLZOO_TEST_MARKER=str(marker))
    wait_for(marker, job)
    workers = [worker_of_rank(job.pid, rank) for rank in (0, 1)]
    os.kill(job.pid, signal.SIGKILL)
    job.communicate(timeout=30)
    deadline = time.monotonic() + 60
    try:
        while not all(gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(gone(pid) for pid in workers), "the workers outlived their launcher"
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    training = load_training(run_dir)
    assert training["position"]["batch"] == 3 and training["world_size"] == 2 and len(training["ranks"]) == 2
    check_free(run_dir)  # no writer left


def test_an_odd_last_batch_gives_the_single_process_metrics(tmp_path, capsys, monkeypatch):
    """45 training images in batches of 16: the last global batch (13) used to be 7 + 7 images with one of them
    twice (the sampler's padding), and 1 and 2 processes disagreed; now they agree up to summation order."""
    from reliability_support import cli

    monkeypatch.setenv("TLZOO_CPU_BF16", "0")
    root = make_images(tmp_path / "data", classes=3, train=15, val=3)
    odd = {**SPEC, "data": {"augment": "none", "batch_size": 16},
           "train": {**SPEC["train"], "epochs": 2}}
    write_spec(tmp_path, root, **odd, cache={"enabled": True, "dir": str(tmp_path / "cache")})
    write_spec(tmp_path, root, name="single.json", **odd, cache={"enabled": True, "dir": str(tmp_path / "cache-1")})
    job = nproc_run(tmp_path, "spec.json", "--output", str(tmp_path / "two"))
    code, err = cli(capsys, "run", str(tmp_path / "single.json"), "--output", str(tmp_path / "one"))
    assert code == 0, err
    code, text = finish(job)
    assert code == 0, text[-3000:]
    single, double = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert len(single) == len(double) == 2
    for a, b in zip(single, double):
        for key in ("train_loss", "val_loss"):
            assert abs(a[key] - b[key]) < TOLERANCE, (key, a, b)
        assert a["val_top1"] == b["val_top1"]
    first, second = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert max((first[k] - second[k]).abs().max().item() for k in first) < TOLERANCE


def test_a_job_every_worker_would_refuse_is_refused_once_before_any_starts(tmp_path, capsys, monkeypatch):
    """A global batch 2 processes cannot share, or more processes than cores: one message, at once, no worker
    started, no run directory and no resume hint for a run that never existed."""
    import tlzoo.runtime.device as runtime
    from reliability_support import cli

    from tlzoo.cli import launch

    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    monkeypatch.setattr(launch, "launch_local", lambda *args: pytest.fail("workers were started"))
    root = make_images(tmp_path / "data", classes=3, train=2, val=1)
    spec = write_spec(tmp_path, root, **SPEC)
    run_dir = str(tmp_path / "run")
    for args, expected in (
            (["--output", run_dir, "--set", "data.batch_size=5", "--nproc", "2"],
             "data.batch_size is 5, which the 2 processes"),
            (["--output", run_dir, "--nproc", "100"], "--nproc 100 on 2 CPU core(s): a process needs a core of its own"),
            (["--resume", run_dir, "--nproc", "2"], f"--resume {run_dir}: no such run directory")):
        code, err = cli(capsys, "run", str(spec), *args)
        assert code == 2 and err.count(expected) == 1, err
        assert "continue with" not in err and not (tmp_path / "run").exists()


def test_the_rendezvous_port_is_the_kernels_choice_and_a_failed_rendezvous_is_a_clear_error(monkeypatch, tmp_path):
    """A port picked, released and bound later could be taken in between (the launch then hung); port 0 lets
    the store's own bind choose it. Should the rendezvous still fail, the user reads why, not a traceback."""
    from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError

    from tlzoo.cli import launch
    from tlzoo.errors import TlzooError

    seen = []

    def elastic_launch(config, entrypoint):
        seen.append(config)

        def start(*args):
            raise RendezvousConnectionError("The connection to the C10d store has failed.")
        return start

    monkeypatch.setattr("torch.distributed.launcher.api.elastic_launch", elastic_launch)
    with pytest.raises(TlzooError, match="could not start the 2 processes' rendezvous on 127.0.0.1") as caught:
        launch.launch_local(2, ["run", "spec.json"], tmp_path, False)
    assert seen[0].rdzv_endpoint == "127.0.0.1:0" and seen[0].rdzv_configs.get("is_host") is True
    assert "torchrun" in caught.value.hint


def test_a_launched_worker_ends_without_the_interpreters_finalization():
    """Where gloo's threads sometimes abort a worker after its work is saved (runtime.distributed.leave_worker)."""
    code = ("import atexit; from tlzoo.cli.main import main; "
            "atexit.register(lambda: print('finalized', flush=True)); main(['list', 'strategies'])")
    plain = {key: value for key, value in os.environ.items() if key not in ("WORLD_SIZE", "TORCHELASTIC_RUN_ID")}
    worker = dict(plain, WORLD_SIZE="2", TORCHELASTIC_RUN_ID="test")
    ended = subprocess.run([sys.executable, "-c", code], env=worker, capture_output=True, text=True, timeout=120)
    assert ended.returncode == 0 and "head_only" in ended.stdout and "finalized" not in ended.stdout
    ended = subprocess.run([sys.executable, "-c", code], env=plain, capture_output=True, text=True, timeout=120)
    assert ended.returncode == 0 and "head_only" in ended.stdout and "finalized" in ended.stdout
