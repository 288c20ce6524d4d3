"""The tiny exported run that test_export.py and test_export_tampering.py share (conftest's `exported`)."""

from __future__ import annotations

from pathlib import Path

import torch

from reliability_support import make_images, register_tiny, write_spec


def call(*args: str) -> None:
    """`tlzoo ARGS` in this process, which must succeed."""
    from tlzoo.cli.main import main

    register_tiny()
    try:
        main(list(args))
    except SystemExit as exc:
        assert exc.code == 0, f"tlzoo {' '.join(args)} exited {exc.code}"


def export_tiny_run(folder: Path) -> tuple[Path, Path]:
    """A 2-epoch tiny run (16x16 images, 3 classes) exported three ways: (its run directory, its val images)."""
    import tlzoo.runtime.device as runtime

    cpus, runtime.available_cpus = runtime.available_cpus, lambda: 1
    threads = torch.get_num_threads()
    try:
        root = make_images(folder / "images")
        spec = write_spec(folder, root, train={"epochs": 2}, data={"augment": "none"})
        run_dir = folder / "run"
        call("run", str(spec), "--output", str(run_dir))
        call("export", str(run_dir))
        call("export", str(run_dir), "--format", "pt2")
        call("export", str(run_dir), "--with-preprocessing", "--out", str(folder / "pre.onnx"),
             "--quantize", "dynamic")
    finally:
        runtime.available_cpus = cpus
        torch.set_num_threads(threads)
    return run_dir, root / "val"
