"""Benchmark sections that reuse a finished head-only run or make their own data: predict, memory, scale."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

GiB = 2**30
TRAIN_PASS = re.compile(r"cache: stage-(\d+) activations of (\d+) train images x \d+ view\(s\) computed in ([\d.]+)s")


def bench_predict(report, head_run: dict, data: Path, work: Path) -> None:
    """`predict()` on the test images against a plain fp32 NCHW eval loop over the same model and transform."""
    import torch
    from PIL import Image

    from seed_loop import list_images, plain_eval
    from tlzoo.engine.inference import load_run, predict
    from tlzoo.engine.metrics import head_after
    from tlzoo.runtime.fast_pass import InferencePath, Stages
    from tlzoo.data.transforms import build_eval_transform
    from tlzoo.model.weights import load_state_file
    from tlzoo.registry import get_registry

    run = load_run(head_run["run_dir"], get_registry())
    items, classes = list_images(data / "test")
    assert classes == run.classes, (classes, run.classes)
    paths = [path for path, _ in items]
    labels = torch.tensor([label for _, label in items])
    transform = build_eval_transform(run.data_config)
    # the baseline in a process of its own: this one gets tlzoo's allocator setting from the first predict()
    out = work / "plain-eval.json"
    subprocess.run([sys.executable, str(Path(__file__).parent / "seed_loop.py"), "eval", "--run-dir",
                    str(head_run["run_dir"]), "--data", str(data), "--json", str(out)], check=True)
    plain_best = json.loads(out.read_text())
    plain_logits = load_state_file(out.with_suffix(".safetensors"))["logits"]
    fast_runs = []
    for _ in range(2):
        started = time.perf_counter()
        predictions = predict(run, paths, top_k=1)
        fast_runs.append((time.perf_counter() - started, predictions))
    fast_seconds, predictions = min(fast_runs, key=lambda r: r[0])
    plain_classes = plain_logits.argmax(1)
    fast_classes = torch.tensor([run.classes.index(p.top[0][0]) for p in predictions])
    agreement = (plain_classes == fast_classes).float().mean().item()
    fast_speed = len(paths) / fast_seconds
    report.row("predict", f"plain fp32 NCHW eval loop, {len(paths)} test images (own process, best of 2)",
               plain_best["seconds"], plain_best["images_per_second"], (plain_classes == labels).float().mean().item(),
               None)
    report.row("predict", "tlzoo predict() (decode + fold + pass; best of 2)", fast_seconds, fast_speed,
               (fast_classes == labels).float().mean().item(), None)
    reference = copy.deepcopy(run.model)
    fixed = plain_eval(reference, items, transform)
    report.note(f"predict: the same plain loop with tlzoo's allocator setting (this process, after predict()): "
                f"{fixed['images_per_second']:.1f} img/s; tlzoo predict is {fast_speed / fixed['images_per_second']:.2f}x that")
    # the model alone on the run's fast path (BatchNorm folded under precision auto): what larger prediction sets approach
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[:32]])
    path = InferencePath(Stages(run.model), run.fast, run.precision, run.device, report.note, "benchmark model")
    forward = head_after(run.model, path)
    forward(batch)
    started = time.perf_counter()
    for _ in range(3):
        forward(batch)
    steady = 96 / (time.perf_counter() - started)
    started = time.perf_counter()
    with torch.no_grad():
        for _ in range(3):
            reference(batch)
    eager = 96 / (time.perf_counter() - started)
    report.note(f"predict: model alone on a preloaded batch of 32: tlzoo's {run.precision} {run.fast} path "
                f"{steady:.1f} img/s vs eager fp32 NCHW {eager:.1f} img/s ({steady / eager:.2f}x; "
                f"{path.folded_count} BatchNorm layers folded in {path.seconds:.1f}s)")
    report.check("predict: >= 3x a plain fp32 NCHW eval loop, top-1 agreement >= 99.5%",
                 fast_speed >= 3 * plain_best["images_per_second"] and agreement >= 0.995,
                 f"{fast_speed:.1f} vs {plain_best['images_per_second']:.1f} img/s "
                 f"({fast_speed / plain_best['images_per_second']:.2f}x); agreement {agreement:.4f}")


def bench_memory(report, head_run: dict) -> None:
    rss = head_run["peak_rss"]
    report.check("memory: peak RSS of a head-only flowers12 run < 3 GB", rss < 3 * GiB, f"{rss / GiB:.2f} GiB")


def frozen_pass(run: dict) -> tuple[int, float] | None:
    """(training images, seconds) of the run's frozen training pass, from its log."""
    found = TRAIN_PASS.findall(run["log"])
    return (int(found[-1][1]), float(found[-1][2])) if found else None


def bench_scale(report, work: Path, data: Path, count: int, run_spec) -> None:
    from scale_data import generate, subset

    big, small = work / f"scale-{count}", work / f"scale-{count // 4}"
    started = time.perf_counter()
    made = generate(data / "train", big / "train", count)
    linked = subset(big / "train", small / "train", made // 4)
    for root in (big, small):
        shutil.copytree(data / "test", root / "test")
    report.note(f"scale: {made} training images generated from flowers12 (flips, quarter turns, crops; JPEG) in "
                f"{time.perf_counter() - started:.0f}s; {linked} of them linked for the smaller run")
    runs = {}
    for name, root, images in (("small", small, linked), ("big", big, made)):
        run = run_spec(f"scale-{images}", root, work, 3, "head_only")
        runs[name] = run
        report.row("scale", f"tlzoo head_only, {images} training images, 3 epochs", run["wall"],
                   images * 3 / run["wall"], run["best_top1"], run["peak_rss"])
    passes = {name: frozen_pass(run) for name, run in runs.items()}
    big_run = runs["big"]
    report.check(f"scale: {made}-image run peak RSS < 4 GB", big_run["peak_rss"] < 4 * GiB,
                 f"{big_run['peak_rss'] / GiB:.2f} GiB")
    if None in passes.values():
        report.note("scale: a frozen training pass was not found in the logs; linearity judged on wall time only")
    per_image = {name: (p[1] / p[0] if p else runs[name]["wall"] / n)
                 for (name, p), n in zip(passes.items(), (linked, made))}
    walls = {name: runs[name]["wall"] for name in runs}
    report.check("scale: time grows linearly with images (per-image frozen-pass time within 1.2x)",
                 per_image["big"] <= 1.2 * per_image["small"],
                 f"frozen pass {per_image['small'] * 1000:.1f} ms/img at {linked} vs {per_image['big'] * 1000:.1f} "
                 f"ms/img at {made}; wall {walls['small']:.0f}s vs {walls['big']:.0f}s "
                 f"({walls['big'] / walls['small']:.2f}x for {made / linked:.1f}x the images)")
