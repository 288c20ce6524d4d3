"""tlzoo against plain seed-001 loops on flowers12, side by side, with the issue's targets checked.

    python benchmarks/bench.py [--only head,head_aug,full,partial,predict,memory,scale] [--plain-epochs N]

Every training run is a subprocess (the plain loops through benchmarks/seed_loop.py,
tlzoo through `tlzoo run` with a spec written to a temporary folder and a fresh
cache folder), watched for wall time and peak memory (the main process's RSS plus
its loader workers' unique memory, sampled every 0.1 s). Results are printed and appended to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = (REPO / ".." / "shared" / "datasets" / "flowers12").resolve()
RESULTS = HERE / "RESULTS.md"
SECTIONS = ["head", "head_aug", "full", "partial", "predict", "memory", "scale"]
sys.path.insert(0, str(HERE))

from report import Report, machine_header  # noqa: E402


def unique_bytes(process: psutil.Process) -> int:
    """Memory only this process holds (USS).

    A forked DataLoader worker maps its parent's pages copy-on-write, and its RSS
    counts them again: summing RSS over the tree double-counts the parent.
    """
    try:
        return process.memory_full_info().uss
    except psutil.Error:
        return 0


def watched(command: list[str], log_file: Path) -> dict:
    """Run `command`; wall seconds, peak memory (bytes: the main process's RSS plus its children's USS), and
    each line it printed with the second it came (from the start), so that a run's epochs can be placed in time."""
    started, peak, lines = time.perf_counter(), 0, []

    def read(stream, log):
        for line in stream:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
            log.write(line)

    with open(log_file, "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO, text=True)
        reader = threading.Thread(target=read, args=(process.stdout, log), daemon=True)
        reader.start()
        watcher = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                peak = max(peak, watcher.memory_info().rss + sum(unique_bytes(child)
                                                                 for child in watcher.children(recursive=True)))
            except psutil.Error:
                pass
            time.sleep(0.1)
        wall = time.perf_counter() - started
        reader.join()
    if process.returncode != 0:
        tail = log_file.read_text()[-3000:]
        raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode}:\n{tail}")
    return {"wall": wall, "peak_rss": peak, "lines": lines}


def plain(mode: str, epochs: int, work: Path) -> dict:
    out = work / f"plain-{mode}.json"
    usage = watched([sys.executable, str(HERE / "seed_loop.py"), mode, "--data", str(DATA), "--epochs", str(epochs),
                     "--json", str(out)], work / f"plain-{mode}.log")
    return {**json.loads(out.read_text()), **usage}


def tlzoo_spec(name: str, data: Path, work: Path, epochs: int, strategy, augment="none", optimizer=None,
               scheduler=None, batch_size: int = 32, backbone_lr_mult: float = 0.1) -> Path:
    spec = {
        "name": name,
        "backbone": {"name": "efficientnet_lite0", "weights": "pretrained"},
        "data": {"reader": {"name": "imagefolder", "options": {"root": str(data), "train": "train", "val": "test"}},
                 "batch_size": batch_size, "augment": augment},
        "train": {"strategy": strategy, "epochs": epochs,
                  "optimizer": optimizer or {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001},
                  "scheduler": scheduler or {"name": "cosine"}, "seed": 0, "precision": "auto",
                  "backbone_lr_mult": backbone_lr_mult},
        "cache": {"dir": str(work / f"cache-{name}")},
        "output": str(work / "runs"),
    }
    path = work / f"{name}.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def tlzoo_run(spec: Path, work: Path, tag: str | None = None) -> dict:
    tag = tag or spec.stem
    run_dir = work / "runs" / tag
    usage = watched([str(Path(sys.executable).parent / "tlzoo"), "run", str(spec), "--output", str(run_dir)],
                    work / f"tlzoo-{tag}.log")
    summary = json.loads((run_dir / "summary.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {**usage, "run_dir": run_dir, "summary": summary, "history": history,
            "best_top1": summary["best"]["val_top1"], "log": (work / f"tlzoo-{tag}.log").read_text()}


def time_to_reach(run: dict, target: float) -> float | None:
    """Seconds from process start to the end of the first epoch at or above `target` top-1: when its line
    was printed (after validating and saving it), not counting what the run does after its last epoch."""
    history = run["history"]
    for index, record in enumerate(history):
        if record["val_top1"] >= target - 1e-9:
            prefix = f"epoch {record['epoch']}/{record['epochs']} "
            printed = [at for at, line in run["lines"] if line.startswith(prefix)]
            return printed[0] if printed else run["wall"] - sum(r["seconds"] for r in history[index + 1:])
    return None


def epoch_throughput(images: int, seconds: list[float]) -> float:
    return images * len(seconds) / sum(seconds)


def bench_head(report: Report, work: Path, plain_epochs: int, state: dict) -> None:
    base = plain("head", plain_epochs, work)
    state["plain_head"] = base
    run = tlzoo_run(tlzoo_spec("head", DATA, work, 10, "head_only"), work)
    state["head_run"] = run
    reach = time_to_reach(run, base["best_top1"])
    limit = base["wall"] / 25
    report.row("head only", f"plain seed-001 loop, {plain_epochs} epochs", base["wall"],
               base["train_images"] * plain_epochs / base["wall"], base["best_top1"], base["peak_rss"])
    report.row("head only", "tlzoo head_only, 10 epochs, cold cache", run["wall"],
               run["summary"]["num_train"] * 10 / run["wall"], run["best_top1"], run["peak_rss"])
    report.check("head only: reach the plain loop's best in <= 1/25 of its wall time",
                 reach is not None and reach <= limit,
                 f"plain best {base['best_top1']:.4f} in {base['wall']:.1f}s; tlzoo reached "
                 + (f"it after {reach:.1f}s, at the end of an epoch; its run, report included, ended at "
                    f"{run['wall']:.1f}s ({base['wall'] / reach:.1f}x faster; limit {limit:.1f}s)"
                    if reach is not None else f"at most {run['best_top1']:.4f} (not reached)"))
    again = tlzoo_run(tlzoo_spec("head", DATA, work, 10, "head_only"), work, "head-warm")
    report.row("head only", "tlzoo head_only again, cache reused", again["wall"],
               again["summary"]["num_train"] * 10 / again["wall"], again["best_top1"], again["peak_rss"])


def bench_head_aug(report: Report, work: Path) -> None:
    run = tlzoo_run(tlzoo_spec("head-aug", DATA, work, 10, "head_only", augment="rotate_flip"), work)
    report.row("head only", "tlzoo head_only, rotate_flip augmentation, 4 cached views", run["wall"],
               run["summary"]["num_train"] * 10 / run["wall"], run["best_top1"], run["peak_rss"])


def bench_full(report: Report, work: Path, epochs: int, state: dict) -> None:
    base = plain("full", epochs, work)
    adam = {"name": "adam", "lr": 1e-4}
    run = tlzoo_run(tlzoo_spec("full", DATA, work, epochs, "none", optimizer=adam,
                               scheduler={"name": "step"}, backbone_lr_mult=1.0, batch_size=64), work)
    state["full_run"] = run
    plain_speed = epoch_throughput(base["train_images"], [r["seconds"] for r in base["history"]])
    ours = epoch_throughput(run["summary"]["num_train"], [r["seconds"] for r in run["history"]])
    report.row("full fine-tune", f"plain loop, all parameters, fp32 NCHW, {epochs} epochs", base["wall"],
               plain_speed, base["best_top1"], base["peak_rss"])
    report.row("full fine-tune", f"tlzoo strategy none, batch 64, {epochs} epochs", run["wall"], ours, run["best_top1"],
               run["peak_rss"])
    report.check("full fine-tune: >= 1.25x the plain loop's images per second", ours >= 1.25 * plain_speed,
                 f"{ours:.1f} vs {plain_speed:.1f} training images per epoch-second (train + test pass): "
                 f"{ours / plain_speed:.2f}x")


def bench_partial(report: Report, work: Path, state: dict) -> None:
    run = tlzoo_run(tlzoo_spec("partial", DATA, work, 3, {"name": "partial", "options": {"groups": 2}},
                               optimizer={"name": "adam", "lr": 1e-3}), work)
    seconds = [r["seconds"] for r in run["history"]]
    report.row("partial fine-tune", "tlzoo partial (top 2 groups + head), 3 epochs", run["wall"],
               epoch_throughput(run["summary"]["num_train"], seconds), run["best_top1"], run["peak_rss"])
    full = state.get("full_run")
    if full is None:
        report.note("partial: the full fine-tune section did not run, so there is no full epoch to compare with")
        return
    full_epoch = sum(r["seconds"] for r in full["history"]) / len(full["history"])
    later = max(seconds[1:])
    report.check("partial fine-tune: each epoch after the first >= 5x faster than a full fine-tune epoch",
                 later * 5 <= full_epoch,
                 f"epochs {', '.join(f'{s:.1f}s' for s in seconds)}; tlzoo full fine-tune epoch {full_epoch:.1f}s: "
                 f"{full_epoch / later:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated: " + ",".join(SECTIONS))
    parser.add_argument("--plain-epochs", type=int, default=10, help="head-only epochs of the plain loop")
    parser.add_argument("--full-epochs", type=int, default=2)
    parser.add_argument("--scale-images", type=int, default=10_000)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    if not DATA.is_dir():
        raise SystemExit(f"flowers12 not found at {DATA} (expected ../shared/datasets/flowers12 from the repo root)")
    from sections import bench_memory, bench_predict, bench_scale

    report = Report(chosen, args)
    started, state = time.perf_counter(), {}
    with tempfile.TemporaryDirectory(prefix="tlzoo-bench-") as tmp:
        work = Path(tmp)
        needs_head = {"head", "predict", "memory"} & set(chosen)
        if needs_head:
            bench_head(report, work, args.plain_epochs, state)
        if "head_aug" in chosen:
            bench_head_aug(report, work)
        if "full" in chosen or "partial" in chosen:
            bench_full(report, work, args.full_epochs, state)
        if "partial" in chosen:
            bench_partial(report, work, state)
        if "predict" in chosen:
            bench_predict(report, state["head_run"], DATA, work)
        if "memory" in chosen:
            bench_memory(report, state["head_run"])
        if "scale" in chosen:
            bench_scale(report, work, DATA, args.scale_images, lambda *a, **k: tlzoo_run(tlzoo_spec(*a, **k), work))
    report.finish(time.perf_counter() - started)
    text = report.markdown()
    print(text)
    if not args.no_write:
        if not RESULTS.exists():
            RESULTS.write_text(machine_header())
        with open(RESULTS, "a") as out:
            out.write(text)
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
