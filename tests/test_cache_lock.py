"""The activation cache shared between runs: one writer per entry, dead builds cleaned, keys that see replaced files."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path


from tlzoo.cache.keys import files_fingerprint
from tlzoo.cache.prefix import free_disk
from tlzoo.cache.store import ActivationStore, MemoryBudget, remove_dead_builds
from tlzoo.engine.run import run_spec
from tlzoo.registry import get_registry
from tlzoo.spec import load_spec

from support import make_image_folder, write_spec
from test_feature_cache import source_for, tiny_images

TESTS = Path(__file__).parent

# a child process building one cache entry through FrozenPrefixSource, each store write slowed down
BUILDER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from tlzoo.cache.store import ActivationStore
    from test_feature_cache import source_for
    write = ActivationStore.write
    def slow_write(self, *args):
        time.sleep(float(sys.argv[4]))
        write(self, *args)
    ActivationStore.write = slow_write
    items = [(Path(sys.argv[2]) / "img" / f"{index}.png", index % 3) for index in range(12)]  # made by the test
    go = Path(sys.argv[2]) / "go"
    (Path(sys.argv[2]) / f"ready-{os.getpid()}").touch()
    while not go.exists():  # both children start building at the same moment
        time.sleep(0.02)
    logs = []
    source, _ = source_for(items, Path(sys.argv[3]), logs, batch_size=4, shuffle=False)
    list(source.epoch(0, 2))
    print(json.dumps(logs))
""")


def start_builder(tmp_path: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BUILDER, str(TESTS), str(tmp_path), str(tmp_path / "cache"),
                             str(delay)], stdout=subprocess.PIPE, text=True)


def test_two_processes_compute_an_entry_once_and_share_it(tmp_path):
    tiny_images(tmp_path / "img", count=12)
    children = [start_builder(tmp_path, 0.5) for _ in range(2)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:  # both imported
        time.sleep(0.02)
    (tmp_path / "go").touch()
    logs = []
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        logs.append(json.loads(out))
    computed = [any("computing stage-2" in line for line in log) for log in logs]
    reused = [any("reusing stage-2" in line for line in log) for log in logs]
    assert sorted(computed) == [False, True] and sorted(reused) == [False, True], logs
    waiter = logs[computed.index(False)]
    assert any("waiting for it" in line for line in waiter), waiter


def test_a_killed_build_neither_blocks_the_next_run_nor_stays_behind(tmp_path):
    tiny_images(tmp_path / "img", count=12)
    (tmp_path / "go").touch()
    child = start_builder(tmp_path, 30)  # holds the key's lock and its building folder, then dies
    root = tmp_path / "cache"
    deadline = time.monotonic() + 60
    while not list(root.glob("building-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = list(root.glob("building-*"))
    assert left and left[0].name.startswith(f"building-{child.pid}-")
    assert remove_dead_builds(root) == []  # alive: never removed
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert remove_dead_builds(root) == left and not left[0].exists()
    logs = []
    items = [(tmp_path / "img" / f"{index}.png", index % 3) for index in range(12)]
    source, _ = source_for(items, root, logs, batch_size=4, shuffle=False)
    started = time.monotonic()
    list(source.epoch(0, 2))
    assert time.monotonic() - started < 20 and any("computing stage-2" in line for line in logs)
    assert not any("waiting" in line for line in logs)
    source.close()


def test_a_live_builders_folder_is_kept_and_its_own_lock_is_released_after_publishing(tmp_path):
    store = ActivationStore.create(2, 1, (4,), "float32", MemoryBudget(2**20), tmp_path)
    assert store.folder.name.startswith(f"building-{os.getpid()}-")
    assert remove_dead_builds(tmp_path) == []
    store.publish(tmp_path / "entry", {"key": "entry"})
    assert store._owner_fd is None
    store.close()


def test_a_replaced_file_of_the_same_size_and_mtime_changes_the_key(tmp_path):
    items = tiny_images(tmp_path / "img", count=3)
    paths = [path for path, _ in items]
    before = files_fingerprint(paths)
    stat = os.stat(paths[1])
    other = tiny_images(tmp_path / "other", count=3)[2][0]
    data = bytearray(paths[1].read_bytes())
    data[-20] ^= 0xFF  # same size, other content
    paths[1].write_bytes(bytes(data))
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(paths[1]).st_size == stat.st_size and os.stat(paths[1]).st_mtime_ns == stat.st_mtime_ns
    in_place = files_fingerprint(paths)
    assert in_place != before
    # replaced by a rename, as a sync tool does
    replacement = tmp_path / "new.png"
    replacement.write_bytes(other.read_bytes())
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, paths[1])
    assert files_fingerprint(paths) not in (before, in_place)


def test_a_fresh_cache_folder_spills_to_disk(tmp_path):
    fresh = tmp_path / "not" / "made" / "yet"
    assert free_disk(fresh) > 0
    logs = []
    items = tiny_images(tmp_path / "img", count=6)
    source, _ = source_for(items, fresh / "activations", logs, memory_mb=0)
    list(source.epoch(0, 2))
    assert any("memory-mapped file" in line for line in logs), logs
    assert not any("not caching" in line for line in logs)
    source.close()


def test_a_run_only_cache_folder_is_removed_when_the_run_ends(tmp_path, tiny_backbone, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "blocker").write_text("a file where the cache folder should be")
    make_image_folder(tmp_path / "data", classes=2, per_class=3, val_per_class=1)
    spec = write_spec(tmp_path, tmp_path / "data", train__epochs=1, cache__dir=str(tmp_path / "blocker" / "cache"))
    stream = io.StringIO()
    run_spec(load_spec(spec, get_registry()), stream=stream)
    assert "for this run only" in stream.getvalue()
    assert list((tmp_path / "tmp").glob("tlzoo-cache-*")) == []


def test_cache_info_and_clear_list_and_remove_entries_by_backbone(tmp_path, capsys):
    from tlzoo.cli.main import main

    items = tiny_images(tmp_path / "img", count=6)
    root = tmp_path / "cache"
    for backbone in ("tiny", "timm/resnet18"):
        source, _ = source_for(items, root / "activations", [], identity={"backbone": backbone})
        list(source.epoch(0, 2))
        source.close()
    old = root / "activations" / "entry-of-an-older-key-format"  # never reused, still listed and cleared
    old.mkdir()
    (old / "meta.json").write_text(json.dumps({"format": "tlzoo-cache/1", "parts": {"backbone": "old/net"}}))
    main(["cache", "info", "--dir", str(root)])
    out = capsys.readouterr().out
    assert "3 entries" in out and "  old/net: 1 entry" in out and "  tiny: 1 entry" in out and "  timm/resnet18: 1 entry" in out
    main(["cache", "clear", "timm/*", "--dir", str(root)])
    assert "removed 1 entry" in capsys.readouterr().out
    main(["cache", "info", "--dir", str(root)])
    out = capsys.readouterr().out
    assert "2 entries" in out and "resnet18" not in out
    assert list((root / "activations").glob("*.lock"))  # one per key computed
    main(["cache", "clear", "--dir", str(root)])
    main(["cache", "info", "--dir", str(root)])
    assert "0 entries, 0.0 MiB" in capsys.readouterr().out
    assert list((root / "activations").iterdir()) == []


def test_decoded_image_files_of_killed_runs_are_removed(tmp_path):
    from tlzoo.cache.decoded import remove_dead_slot_files

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid whose process has ended
    dead = tmp_path / f"decoded-train-{gone.pid}-x1.u8"
    live = tmp_path / f"decoded-val-{os.getpid()}-x2.u8"
    for path in (dead, live):
        path.write_bytes(b"\0" * 16)
    assert remove_dead_slot_files(tmp_path) == [dead]
    assert live.exists() and not dead.exists()
