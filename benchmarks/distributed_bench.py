"""One process against two (`tlzoo run --nproc 2`, DDP over gloo) on flowers12, on this machine's CPUs.

    python benchmarks/distributed_bench.py [--only head,partial,full] [--gpus]

Runs: lite0 head only (10 epochs), a partial fine-tune (top 2 groups + head,
3 epochs) and one epoch of a full fine-tune (strategy none), each with 1 and
with 2 processes and the same global batch, each in a fresh cache folder.
`--gpus` runs the same on CUDA with 1 process and with one per GPU. The
figures and the top-1 gaps are printed and appended to benchmarks/RESULTS.md
with the CPU model, the load and the date.

On a 2-core machine two processes cannot be faster: each gets one core instead
of two threads, and they add a rendezvous, the all-reduce of every step's
gradients and the second process's start (torch import, data scan, model build).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = (REPO / ".." / "shared" / "datasets" / "flowers12").resolve()
RESULTS = HERE / "RESULTS.md"
sys.path.insert(0, str(HERE))

from report import cpu_model, load_line  # noqa: E402

BASE = {
    "backbone": {"name": "efficientnet_lite0", "weights": "pretrained"},
    "data": {"reader": {"name": "imagefolder", "options": {"root": str(DATA), "train": "train", "val": "test"}},
             "batch_size": 32, "augment": "none"},
    "train": {"label_smoothing": 0.1, "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001},
              "scheduler": {"name": "cosine"}, "seed": 0},
}
RUNS = {
    "head": ("head only, 10 epochs", {"strategy": "head_only", "epochs": 10}),
    "partial": ("partial fine-tune (top 2 groups + head), 3 epochs",
                {"strategy": {"name": "partial", "options": {"groups": 2}}, "epochs": 3, "backbone_lr_mult": 0.5}),
    "full": ("full fine-tune (strategy none), 1 epoch", {"strategy": "none", "epochs": 1}),
}


def run(name: str, train: dict, nproc: int, folder: Path, device: str) -> dict:
    spec = json.loads(json.dumps(BASE))
    spec["name"] = f"{name}-{nproc}"
    spec["train"].update(train, device=device)
    spec["cache"] = {"dir": str(folder / f"cache-{name}-{nproc}")}
    spec["output"] = str(folder / "runs")
    path = folder / f"{name}-{nproc}.json"
    path.write_text(json.dumps(spec, indent=1))
    command = [sys.executable, "-m", "tlzoo", "run", str(path)] + (["--nproc", str(nproc)] if nproc > 1 else [])
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    summary = json.loads((folder / "runs" / spec["name"] / "summary.json").read_text())
    epochs = [line["seconds"] for line in map(json.loads, (folder / "runs" / spec["name"] / "metrics.jsonl")
                                                .read_text().splitlines())]
    return {"wall": wall, "top1": summary["best"]["val_top1"], "epochs": epochs, "last_top1": summary["last"]["val_top1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(RUNS))
    parser.add_argument("--gpus", action="store_true", help="CUDA: 1 process against one per GPU")
    args = parser.parse_args()
    import torch

    device, many = ("cuda", torch.cuda.device_count()) if args.gpus else ("cpu", 2)
    before, started = load_line(), time.perf_counter()
    rows, gaps = [], []
    with tempfile.TemporaryDirectory(prefix="tlzoo-dist-bench-") as tmp:
        for name in args.only.split(","):
            label, train = RUNS[name]
            one, two = run(name, train, 1, Path(tmp), device), run(name, train, many, Path(tmp), device)
            for nproc, result in ((1, one), (many, two)):
                rows.append(f"| {label} | {nproc} | {result['wall']:.1f} | {sum(result['epochs']):.1f} | "
                            f"{result['epochs'][-1]:.1f} | {result['top1']:.4f} | {result['last_top1']:.4f} |")
                print(rows[-1], flush=True)
            gaps.append(f"| {label} | {abs(one['top1'] - two['top1']) * 100:.2f} | "
                        f"{'PASS' if abs(one['top1'] - two['top1']) <= 0.01 else 'FAIL'} | "
                        f"{two['wall'] / one['wall']:.2f}x |")
    where = f"{many} GPUs" if args.gpus else f"{cpu_model()}; {len(os.sched_getaffinity(0))} cores"
    text = (f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: 1 process against {many} "
            f"(benchmarks/distributed_bench.py)\n\n{where}; torch {torch.__version__}; backend "
            f"{'nccl' if args.gpus else 'gloo'}. Load average before {before}, after {load_line()}; benchmark wall "
            f"time {(time.perf_counter() - started) / 60:.1f} min. Same global batch (32) and seed; flowers12 test "
            "split as validation (240 images). Epoch s: the sum of metrics.jsonl's epoch seconds; wall includes "
            "start-up (torch import, scan, model build, cache build), for N processes N of each.\n\n"
            "| run | processes | wall s | epochs s | last epoch s | best top-1 | last top-1 |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) +
            "\n\n| run | best top-1 gap, points | within 1 point | wall N / wall 1 |\n|---|---:|---|---:|\n"
            + "\n".join(gaps) + "\n")
    print(text)
    with open(RESULTS, "a", encoding="utf-8") as results:
        results.write(text)


if __name__ == "__main__":
    main()
