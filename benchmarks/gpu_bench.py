"""What only a GPU shows: tlzoo on CUDA against the same machine's CPUs, and its precisions, on flowers12.

    python benchmarks/gpu_bench.py [--data FLOWERS12] [--time 90s] [--out DIR]

1. Throughput: images/s through the whole lite0 and lite2 backbone as tlzoo builds it (eval,
   channels_last), batch 256 on the GPU in fp32, bf16 and fp16 autocast, batch 32 on the CPUs in
   their `precision: auto`; every timed call waits for the GPU (torch.cuda.synchronize).
2. Runs, each `tlzoo run` in its own process with an empty activation cache: the demo recipe
   (lite0 head only, 10 epochs, test split as validation) on the GPU and on the CPUs; the lite2
   partial recipe (top 2 groups + head, 3 epochs, 20 % of train as validation, test scored once)
   on the GPU in bf16 (what `auto` means there), fp16 and fp32. The checks: the GPU's top-1 within
   one point of the CPU's, and bf16 and fp16 within one point of fp32.
3. `tlzoo train FLOWERS12/train --test FLOWERS12/test --time T` on the GPU: the whole command's wall
   time against its budget plus 10 %, the speeds it measured and what it chose.

Appends a section to benchmarks/RESULTS.md and, with --out, writes it (and the runs' logs) there too.
No GPU: says so and exits 2; the test suite never needs one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
FLOWERS12 = REPO.parent / "shared" / "datasets" / "flowers12"
sys.path.insert(0, str(HERE))

from report import cpu_line, load_line  # noqa: E402

TRAIN = {"label_smoothing": 0.1, "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001},
         "scheduler": {"name": "cosine"}, "seed": 0}
HEAD = {"strategy": "head_only", "epochs": 10}
GPU = "cuda"  # a dry run of this script on a machine without one sets "cpu" here
PARTIAL = {"strategy": {"name": "partial", "options": {"groups": 2}}, "epochs": 3, "backbone_lr_mult": 0.5}


def throughput(backbone: str, device: str, precision: str, batch: int, seconds: float = 3.0) -> float:
    """Images/s through the whole backbone, the fastest of timed rounds after a warm-up."""
    import torch

    from tlzoo.model.build import build_model
    from tlzoo.registry import get_registry
    from tlzoo.runtime.device import autocast, synchronize
    from tlzoo.spec import HeadSpec, ResolvedComponent

    component = get_registry().catalog("backbones").get_component(backbone)
    built = build_model(ResolvedComponent(component, component.options.model_validate({})), "pretrained",
                        HeadSpec(), 12)
    where = torch.device(device)
    model = built.model.eval().to(where, memory_format=torch.channels_last)
    x = torch.randn(batch, *built.data_config.input_size).to(where).contiguous(memory_format=torch.channels_last)

    def once():
        with torch.inference_mode(), autocast(precision, where):
            model.forward_stages(x)
        synchronize(where)

    for _ in range(3):
        once()
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - started)
    return batch / best


def tlzoo(args: list[str], cache: Path, log: Path) -> tuple[float, int]:
    env = dict(os.environ, TLZOO_CACHE_DIR=str(cache))
    started = time.monotonic()
    with log.open("w") as handle:
        code = subprocess.run([sys.executable, "-m", "tlzoo", *args], stdout=handle, stderr=subprocess.STDOUT,
                              env=env, cwd=REPO).returncode
    return time.monotonic() - started, code


def read_json(path: Path) -> dict:
    """A run's JSON file, {} where the run did not get that far."""
    return json.loads(path.read_text()) if path.is_file() else {}


def run_spec(name: str, backbone: str, reader: dict, train: dict, work: Path) -> dict:
    spec = {"name": name, "backbone": {"name": backbone, "weights": "pretrained"},
            "data": {"reader": {"name": "imagefolder", "options": reader}, "batch_size": 32, "augment": "none"},
            "train": {**TRAIN, **train}, "output": str(work / "runs")}
    path = work / f"{name}.json"
    path.write_text(json.dumps(spec, indent=1))
    wall, code = tlzoo(["run", str(path)], work / "caches" / name, work / "logs" / f"{name}.log")
    run_dir = work / "runs" / name
    summary = read_json(run_dir / "summary.json")
    epochs = [json.loads(line)["seconds"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] \
        if (run_dir / "metrics.jsonl").is_file() else []
    return {"name": name, "code": code, "wall": wall, "epochs_s": sum(epochs),
            "val": (summary.get("best") or {}).get("val_top1"), "test": (summary.get("test") or {}).get("top1"),
            "precision": read_json(run_dir / "best.json").get("eval", {}).get("precision")}


def fmt(value, digits=4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=FLOWERS12)
    parser.add_argument("--time", default="90s", help="tlzoo train's budget")
    parser.add_argument("--out", type=Path, default=None, help="also write the section and the logs here")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_bench: no CUDA GPU here (torch.cuda.is_available() is False); run it on a GPU machine")
    data = args.data.resolve()
    gpu = torch.cuda.get_device_name(0)
    started, before = time.perf_counter(), load_line()
    lines = [f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: tlzoo on a GPU (benchmarks/gpu_bench.py)\n",
             f"GPU: {gpu} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB), torch "
             f"{torch.__version__}, CUDA {torch.version.cuda}; the same machine's CPUs: {cpu_line()} "
             f"{len(os.sched_getaffinity(0))} cores; Python {sys.version.split()[0]}.\n"]

    printed = 0

    def flush():
        """Print the lines added since the last call; rewrite the section under --out (a timeout keeps it)."""
        nonlocal printed
        print("\n".join(lines[printed:]), flush=True)
        printed = len(lines)
        if args.out:
            (args.out / "gpu_section.md").write_text("\n".join(lines) + "\n")

    # 1. throughput
    from tlzoo.runtime.precision import auto_precision

    cpu_precision = auto_precision(torch.device("cpu"))
    lines += ["| backbone | device | batch | precision | images/s |", "|---|---|---:|---|---:|"]
    speeds = {}
    for backbone in ("efficientnet_lite0", "efficientnet_lite2"):
        for device, batch, precision in ((GPU, 256, "fp32"), (GPU, 256, "bf16"), (GPU, 256, "fp16"),
                                         ("cpu", 32, cpu_precision)):
            speeds[backbone, device, precision] = speed = throughput(backbone, device, precision, batch)
            lines.append(f"| {backbone} | {device} | {batch} | {precision} | {speed:.0f} |")
            flush()
    checks = [("bf16 autocast faster than fp32 on the GPU (lite0, lite2)",
               all(speeds[b, GPU, "bf16"] > speeds[b, GPU, "fp32"] for b in ("efficientnet_lite0",
                                                                                    "efficientnet_lite2")))]
    torch.cuda.empty_cache()

    # 2. runs
    work = Path(tempfile.mkdtemp(prefix="tlzoo-gpu-bench-"))
    (work / "logs").mkdir()
    head_reader = {"root": str(data), "train": "train", "val": "test"}
    partial_reader = {"root": str(data), "train": "train", "val_split": 0.2, "test": "test"}
    runs = [run_spec("head-cuda", "efficientnet_lite0", head_reader, {**HEAD, "device": GPU}, work),
            run_spec("head-cpu", "efficientnet_lite0", head_reader, {**HEAD, "device": "cpu"}, work)]
    for precision in ("auto", "fp16", "fp32"):
        runs.append(run_spec(f"partial-cuda-{precision}", "efficientnet_lite2", partial_reader,
                             {**PARTIAL, "device": GPU, "precision": precision}, work))
    lines += ["", "| run | precision | exit | wall s | epochs s | best val top-1 | test top-1 |",
              "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['precision']} | {r['code']} | {r['wall']:.1f} | {r['epochs_s']:.1f} | "
              f"{fmt(r['val'])} | {fmt(r['test'])} |" for r in runs]
    by = {r["name"]: r for r in runs}

    def within_a_point(a: str, b: str, key: str) -> bool:
        return None not in (by[a][key], by[b][key]) and abs(by[a][key] - by[b][key]) <= 0.01

    checks += [("every run exited 0", all(r["code"] == 0 for r in runs)),
               ("head only: GPU's best val top-1 within 1 point of the CPUs'",
                within_a_point("head-cuda", "head-cpu", "val")),
               ("lite2 partial: bf16 (auto) test top-1 within 1 point of fp32",
                within_a_point("partial-cuda-auto", "partial-cuda-fp32", "test")),
               ("lite2 partial: fp16 test top-1 within 1 point of fp32",
                within_a_point("partial-cuda-fp16", "partial-cuda-fp32", "test"))]
    flush()

    # 3. tlzoo train on the GPU
    out_dir = work / "runs" / "auto"
    wall, code = tlzoo(["train", str(data / "train"), "--test", str(data / "test"), "--time", args.time, "--output",
                        str(out_dir), "--seed", "0"], work / "caches" / "auto", work / "logs" / "auto.log")
    from tlzoo.auto.budget import parse_duration

    budget = parse_duration(args.time)
    decisions, summary = read_json(out_dir / "decisions.json"), read_json(out_dir / "summary.json")
    chosen, test_top1 = decisions.get("chosen") or {}, (summary.get("test") or {}).get("top1")
    measured = [f"{row['candidate']}: {row['reason'].split(',')[0]}" for row in decisions.get("candidates", [])
                if row["step"] in ("speed", "throughput") and row["kept"]]
    lines += ["", f"tlzoo train --time {args.time} on the GPU: exit {code}, wall {wall:.1f} s of {budget:.0f} s "
              f"(+10 %: {budget * 1.1:.0f} s); machine {decisions.get('machine')}; chose "
              f"{chosen.get('backbone')}, {chosen.get('recipe')}; test top-1 {fmt(test_top1)}"
              f". Speeds it measured (batch 16): {'; '.join(measured) or '-'}."]
    checks += [("tlzoo train exited 0 within its budget plus 10 %", code == 0 and wall <= budget * 1.1)]
    lines += ["", "| check | result |", "|---|---|"] + [f"| {name} | {'PASS' if ok else 'FAIL'} |"
                                                        for name, ok in checks]
    lines += ["", f"Before the benchmark {before}, after it {load_line()}; its wall time "
              f"{(time.perf_counter() - started) / 60:.1f} min."]
    flush()
    with open(RESULTS, "a", encoding="utf-8") as results:
        results.write("\n".join(lines) + "\n")
    if args.out:
        with tarfile.open(args.out / "gpu_logs.tar.gz", "w:gz") as tar:
            tar.add(work / "logs", arcname="logs")
            for run_dir in (work / "runs").iterdir():
                for name in ("decisions.json", "summary.json", "spec.json"):
                    if (run_dir / name).is_file():
                        tar.add(run_dir / name, arcname=f"runs/{run_dir.name}/{name}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
