"""`tlzoo predict` of a lite run imports only what predicting needs: no timm, no torchvision, no torch._dynamo.

Those three cost about 2 s of start-up on the 2-core test machine (torch alone about
1 s); a stray import anywhere on the predict path brings them back silently.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from support import make_image_folder, write_spec

pytestmark = pytest.mark.usefixtures("one_thread")

HEAVY = ("timm", "torchvision", "torch._dynamo")

PREDICT_TWICE = textwrap.dedent("""
    import json, sys

    def heavy():
        return [name for name in HEAVY if name in sys.modules]

    from tlzoo.cli.main import main
    try:
        main(["predict", RUN, IMAGE, "--format", "json"])
    except SystemExit as exc:
        assert not exc.code, exc.code
    after_cli = heavy()

    import tlzoo
    model = tlzoo.load(RUN)
    model.predict([IMAGE])
    print(json.dumps({"cli": after_cli, "api": heavy(), "path": model._loaded.fast}))
""")


def test_predict_of_a_lite_run_imports_neither_timm_nor_torchvision(tmp_path):
    from tlzoo.engine.run import run_spec
    from tlzoo.registry import get_registry
    from tlzoo.spec import load_spec

    root = make_image_folder(tmp_path / "data", classes=2, per_class=2, val_per_class=1)
    spec = write_spec(tmp_path, root, backbone={"name": "efficientnet_lite0", "weights": "none"},
                      train={"epochs": 1, "precision": "auto"}, cache={"enabled": False})
    run_dir = run_spec(load_spec(spec, get_registry()), tmp_path / "run").run_dir
    image = root / "val" / "class1" / "0.png"

    code = f"HEAVY, RUN, IMAGE = {HEAVY!r}, {str(run_dir)!r}, {str(image)!r}\n" + PREDICT_TWICE
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    cli_rows, report = result.stdout.split("\n]\n")
    assert json.loads(cli_rows + "]")[0]["top"][0]["class"] in ("class0", "class1")
    report = json.loads(report)
    assert report["path"] == "folded"  # the fast path predict takes under precision auto on a CPU
    assert report["cli"] == [], f"tlzoo predict imported {report['cli']}"
    assert report["api"] == [], f"tlzoo.load(...).predict imported {report['api']}"
