"""`tlzoo predict` with bad inputs, FIFOs named like images, and names that would break a line.

Also skipped.txt (written only when something was skipped, names escaped) and the
message for a refused pickle (whole and plain, no ANSI codes).
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from tlzoo.data.escaping import line_safe
from tlzoo.data.skipped import write_skipped
from tlzoo.data.samples import Problem
from tlzoo.errors import WeightsError
from tlzoo.model.weights import load_state_file

from reliability_support import cli, cli_output, make_images, register_tiny, write_spec

pytestmark = pytest.mark.usefixtures("one_thread")


def train_tiny(tmp_path: Path, root: Path | None = None, **data) -> Path:
    """A one-epoch run of the tiny backbone, in this process; returns its run directory."""
    from tlzoo.engine.run import run_spec
    from tlzoo.registry import get_registry
    from tlzoo.spec import load_spec

    root = root or make_images(tmp_path / "data", classes=2, train=4, val=2)
    spec = write_spec(tmp_path, root, data={"reader": {"name": "imagefolder", "options": {
        "root": str(root), "train": "train", "val": "val"}}, "batch_size": 4, "num_workers": 0, "augment": "none",
        **data}, train={"epochs": 1})
    register_tiny()
    return run_spec(load_spec(spec, get_registry()), tmp_path / "run").run_dir


@pytest.fixture
def deadline():
    """Fail, rather than hang, when something blocks the main thread (opening a FIFO did)."""
    def expired(signum, frame):
        raise AssertionError("still running after 60 s: blocked?")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_predict_reports_missing_fifo_and_broken_inputs_and_predicts_the_rest(tmp_path, capsys, deadline):
    run_dir = train_tiny(tmp_path)
    sample = tmp_path / "data" / "val" / "class0" / "0.png"
    inputs = tmp_path / "inputs"
    (inputs / "folder").mkdir(parents=True)
    good = shutil.copy(sample, inputs / "good.png")
    shutil.copy(sample, inputs / "folder" / "also good.png")
    newline = Path(shutil.copy(sample, inputs / "new\nline.png"))
    broken = inputs / "broken.png"
    broken.write_text("not an image")
    fifo, fifo_in_folder = inputs / "x.jpg", inputs / "folder" / "y.jpg"
    os.mkfifo(fifo)
    os.mkfifo(fifo_in_folder)  # opening either would block until a writer comes
    missing = inputs / "missing.png"

    code, out, err = cli_output(capsys, "predict", str(run_dir), str(good), str(missing), str(fifo), str(broken),
                                str(inputs / "folder"), str(newline), "--top-k", "1")
    assert code == 1, err  # some predictions, some failures
    lines = out.splitlines()
    assert len(lines) == 7  # one line an input, the file named with a newline included
    by_name = {line.split("  ")[0].strip(): line for line in lines}
    assert set(by_name) == {str(good), str(missing), str(fifo), str(broken), str(fifo_in_folder),
                            str(inputs / "folder" / "also good.png"), str(inputs / "new\\nline.png")}
    assert "ERROR" not in by_name[str(good)] and "ERROR" not in by_name[str(inputs / "new\\nline.png")]
    assert by_name[str(missing)].endswith("ERROR missing file")
    assert by_name[str(fifo)].endswith("ERROR not a regular file (a FIFO)")
    assert by_name[str(fifo_in_folder)].endswith("ERROR not a regular file (a FIFO)")
    assert f"tlzoo: skipped {missing}: missing file" in err
    assert "tlzoo: error: 4 of 7 input(s) could not be read and have no prediction" in err
    assert "data.bad_files" not in out + err and "Traceback" not in err


def test_predict_with_nothing_readable_exits_2(tmp_path, capsys):
    run_dir = train_tiny(tmp_path)
    code, err = cli(capsys, "predict", str(run_dir), str(tmp_path / "gone.png"))
    assert code == 2 and "none of the 1 input(s) could be predicted" in err and "gone.png: missing file" in err


def test_run_skips_a_fifo_named_like_an_image_with_its_reason(tmp_path, deadline):
    root = make_images(tmp_path / "data", classes=2, train=4, val=2)
    fifo = root / "train" / "class0" / "x.jpg"
    os.mkfifo(fifo)  # the scan used to block on it, silently, for ever
    run_dir = train_tiny(tmp_path, root=root, max_bad_fraction=0.5)
    lines = (run_dir / "skipped.txt").read_text(encoding="utf-8").splitlines()
    assert lines[1:] == [f"{fifo}\tnot a regular file (a FIFO)"]


def test_skipped_txt_is_written_only_when_something_was_skipped(tmp_path):
    run_dir = train_tiny(tmp_path)
    assert not (run_dir / "skipped.txt").exists()
    assert write_skipped([], tmp_path / "other" / "skipped.txt") is False
    assert not (tmp_path / "other").exists()


def test_skipped_txt_escapes_names_so_each_input_stays_on_one_line(tmp_path):
    from tlzoo.engine.reporting import read_skipped

    target = tmp_path / "skipped.txt"
    write_skipped([Problem("a\nb.jpg", "missing file"), Problem("list.txt:3 (t\tab.png)", "empty file (0 bytes)")],
                  target)
    lines = target.read_text(encoding="utf-8").splitlines()
    assert lines[1:] == ["a\\nb.jpg\tmissing file", "list.txt:3 (t\\tab.png)\tempty file (0 bytes)"]
    assert read_skipped(target) == [("a\\nb.jpg", "missing file"), ("list.txt:3 (t\\tab.png)", "empty file (0 bytes)")]


@pytest.mark.parametrize("name, shown", [
    ("plain name.jpg", "plain name.jpg"),
    ("caf\u00e9/\u732b.png", "caf\u00e9/\u732b.png"),  # letters stay as they are
    ("a\nb\rc\td.png", "a\\nb\\rc\\td.png"),
    ("back\\slash.png", "back\\\\slash.png"),  # so that an escape in the output is never ambiguous
    ("\x1b[31mred.png", "\\x1b[31mred.png"),  # no terminal escape reaches the screen
    ("\u202egnp.exe", "\\u202egnp.exe"),  # nor a right-to-left override
    ("line\u2028sep.png", "line\\u2028sep.png"),
    ("latin1-\udce9.png", "latin1-\\xe9.png"),  # an undecodable byte, as os.fsdecode gives it
])
def test_line_safe_escapes_what_could_split_or_forge_a_line(name, shown):
    assert line_safe(name) == shown
    assert len(line_safe(name).splitlines()) == 1
    line_safe(name).encode("utf-8")  # always writable as UTF-8


class NotATensor:
    """Pickled by reference to this module: torch's safe loader refuses the global."""


def test_a_refused_pickle_is_reported_whole_and_plain(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": NotATensor()}, path)
    with pytest.raises(WeightsError) as caught:
        load_state_file(path)
    message = str(caught.value)
    assert "\x1b" not in message  # torch's wrapper carries ANSI bold codes
    assert "weights_only` set to `False`" not in message and "add_safe_globals" not in message  # advice for torch.load
    assert ("torch's safe loader: Unsupported global: GLOBAL " in message
            and "NotATensor was not an allowed global by default.)" in message)


def test_a_signal_during_evaluate_stops_it_at_once_with_128_plus_signal(tmp_path, capsys, monkeypatch):
    import tlzoo.engine.evaluation as evaluation

    run_dir = train_tiny(tmp_path)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the pass
        raise AssertionError("the signal did not stop evaluate")

    monkeypatch.setattr(evaluation, "evaluate_run", interrupted)
    code, _, err = cli_output(capsys, "evaluate", str(run_dir))
    assert code == 130 and "stopped by Ctrl-C (SIGINT) during evaluation; nothing to save" in err
