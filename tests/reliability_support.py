"""The reliability tests' names for tests/support.py's test/reliability_cnn, and a CLI launcher.

Run as a script (`python tests/reliability_support.py run SPEC ...`) it registers
the tiny backbone and runs the tlzoo CLI in this process, so that subprocess
tests (kill -9, SIGTERM) train the same tiny model. Test-only switches, read
from the environment by this launcher only (tlzoo itself has no test hooks):

- TLZOO_TEST_PAUSE_AT_STEP=N: after global step N, write TLZOO_TEST_MARKER and
  sleep TLZOO_TEST_PAUSE_SECONDS (default 600), so the test can kill or signal
  the process in the middle of an epoch.
- TLZOO_TEST_SLOW_SAVE=S: sleep S seconds inside checkpoint writes, after the data
  is on disk and before the rename, from the TLZOO_TEST_SLOW_SAVE_FROM-th write on
  (default 1), writing TLZOO_TEST_MARKER first (to signal a process while it saves).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))  # run as a script, support.py is beside it

from support import RELIABILITY_CNN, make_images  # noqa: E402,F401  (make_images: for the reliability tests)
from support import write_spec as support_write_spec  # noqa: E402

TINY = RELIABILITY_CNN.name
build_tiny = RELIABILITY_CNN.build
register_tiny = RELIABILITY_CNN.register
write_spec = functools.partial(support_write_spec, tiny=RELIABILITY_CNN)


def use_one_thread() -> None:
    """Runs use one intra-op thread: on a shared 2-core machine two threads make these tiny
    models ~8x slower (each op waits for both cores). The subprocess launcher does the same,
    so in-process and subprocess runs stay bitwise comparable (conftest's one_thread fixture
    does it for one test)."""
    import tlzoo.runtime.device as runtime

    runtime.available_cpus = lambda: 1


def launch(*args: str, env: dict | None = None, wait: bool = True, timeout: float = 120):
    """Run this file as the tlzoo CLI in a fresh interpreter (Popen when wait is False)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    command = [sys.executable, str(HERE), *args]
    if not wait:
        return subprocess.Popen(command, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=timeout)


def cli_output(capsys, *args: str) -> tuple[int, str, str]:
    """Run the tlzoo CLI in this process (the tiny backbone registered); returns (exit code, stdout, stderr)."""
    from tlzoo.cli.main import main

    register_tiny()
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli(capsys, *args: str) -> tuple[int, str]:
    """cli_output without stdout: (exit code, stderr)."""
    code, _, err = cli_output(capsys, *args)
    return code, err


def wait_for(path: Path, process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"process ended ({process.returncode}) before {path.name}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.05)


def _install_test_switches() -> None:
    pause_at = int(os.environ.get("TLZOO_TEST_PAUSE_AT_STEP", "0"))
    pause_seconds = float(os.environ.get("TLZOO_TEST_PAUSE_SECONDS", "600"))
    slow_save = float(os.environ.get("TLZOO_TEST_SLOW_SAVE", "0"))
    slow_from = int(os.environ.get("TLZOO_TEST_SLOW_SAVE_FROM", "1"))
    marker = os.environ.get("TLZOO_TEST_MARKER", "")
    if pause_at:
        from tlzoo.engine.loop import Trainer

        original = Trainer.train_step

        def train_step(self, batch, frozen_stages, epoch):
            value = original(self, batch, frozen_stages, epoch)
            if self.state.step + 1 == pause_at:  # the loop counts the step right after this returns
                Path(marker).write_text(f"{epoch} {self.state.step + 1}")
                time.sleep(pause_seconds)
            return value

        Trainer.train_step = train_step
    if slow_save:
        import tlzoo.rundir.writing as writing

        writes = []

        class SlowOs:
            def __getattr__(self, name):
                return getattr(os, name)

            @staticmethod
            def replace(source, target):
                writes.append(target)
                if len(writes) >= slow_from:
                    Path(marker).write_text(f"saving {target}")
                    time.sleep(slow_save)
                os.replace(source, target)

        writing.os = SlowOs()


if __name__ == "__main__":
    register_tiny()
    if "--nproc" not in sys.argv:  # a launcher keeps the machine's cores: it checks --nproc against them
        use_one_thread()
    _install_test_switches()
    from tlzoo.cli.main import main

    main(sys.argv[1:])
