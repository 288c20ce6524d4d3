"""glibc allocator setting: freed buffers kept during a run, glibc's defaults back when run_spec returns.

Measured in child processes, so the test session's own allocator is never changed.
Each check is a yes/no fact about where a freed 256 MiB block goes (kept in the
heap, or unmapped at once), not a timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

TESTS = Path(__file__).parent

PROBE = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, sys.argv[1])
    import torch
    torch.set_num_threads(1)
    from tlzoo.runtime import device

    def resident():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()

    def freed_block_stays():
        block = torch.ones(64 * 2**20)  # 256 MiB, every page touched
        before = resident()
        del block
        return before - resident() < 100 * 2**20

    facts = {"default_stays": freed_block_stays()}
    facts["kept"] = device.keep_freed_memory()
    facts["kept_stays"] = freed_block_stays()
    before_trim = resident()
    facts["trimmed"] = device.release_freed_memory() and before_trim - resident() > 200 * 2**20
    if sys.argv[2] in ("run", "load"):
        device.restore_malloc_defaults()
        from support import build_tiny, make_image_folder, write_spec, TINY
        from tlzoo.registry import Component, get_registry
        from tlzoo.engine.run import run_spec
        from tlzoo.spec import load_spec
        import io, pathlib
        get_registry().catalog("backbones").add(Component(TINY, "tiny", build_tiny, plugin="tests"))
        folder = pathlib.Path(sys.argv[3])
        make_image_folder(folder / "data", classes=2, per_class=2, val_per_class=1)
        spec = write_spec(folder, folder / "data", train__epochs=1, cache__dir=str(folder / "cache"))
        log = io.StringIO()
        result = run_spec(load_spec(spec, get_registry()), stream=log)
        facts["run_kept"] = "train" in log.getvalue()
        if sys.argv[2] == "load":  # a notebook: tlzoo.load(...).predict / .evaluate after the run
            import tlzoo
            model = tlzoo.load(result.run_dir)
            model.predict(sorted((folder / "data" / "val").rglob("*.png")))
            facts["predict_restored_stays"] = freed_block_stays()
            model.evaluate()
    else:
        device.restore_malloc_defaults()
    facts["restored_stays"] = freed_block_stays()
    print(json.dumps(facts))
""")


def probe(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(TESTS), *args], capture_output=True, text=True,
                         timeout=300, env={**__import__("os").environ, "TLZOO_MALLOC": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kept_buffers_stay_in_the_heap_and_are_trimmed_on_request():
    facts = probe("plain")
    assert facts["default_stays"] is False  # glibc: a 256 MiB block is an mmap, unmapped when freed
    assert facts["kept"] and facts["kept_stays"]
    assert facts["trimmed"]
    assert facts["restored_stays"] is False


def test_predict_and_evaluate_of_a_loaded_run_give_back_glibcs_defaults(tmp_path):
    facts = probe("load", str(tmp_path))
    assert facts["predict_restored_stays"] is False
    assert facts["restored_stays"] is False  # after evaluate too


def test_run_spec_gives_back_glibcs_defaults_when_it_returns(tmp_path):
    facts = probe("run", str(tmp_path))
    assert facts["run_kept"]
    assert facts["restored_stays"] is False  # after the head-only run (which keeps buffers) the setting is gone
