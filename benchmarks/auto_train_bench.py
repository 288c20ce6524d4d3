"""`tlzoo train --time 10m` against the two fixed recipes, on held-out data sets made here; appends to RESULTS.md.

The data sets are made by bench_sets.py (its docstring says what each is and when it was drawn).

Methods, each in its own process with an empty activation cache (so each pays its own feature passes):
`tlzoo train DIR --time T`, the demo recipe (examples/flowers12.json: lite0 head only) and the lite2 partial
recipe (examples/flowers12_lite2.json), the last two with the data's train/val/test folders. Each verdict
also pairs tlzoo train with the better fixed recipe on the same test images (`tlzoo predict`): how many only
one of them gets right, and the exact McNemar p of that split.

    python benchmarks/auto_train_bench.py [--time 10m] [--datasets flowers12-resplit,patches] [--work DIR]

With --seeds 0,1,2 every method runs on every set with each training seed (tlzoo train's --seed, the recipes'
train.seed); the verdicts then also compare each method's mean over the seeds, since one seed's test top-1 on
a few hundred images is one draw of what a method scores on that set.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_sets import DATASETS, DEFAULT_SETS  # benchmarks/bench_sets.py, beside this script

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
TLZOO = Path(sys.executable).parent / "tlzoo"
RECIPES = {"demo (lite0 head only)": REPO / "examples" / "flowers12.json",
           "lite2 partial": REPO / "examples" / "flowers12_lite2.json"}


def recipe_spec(path: Path, data: Path, out: Path, seed: int = 0) -> Path:
    spec = json.loads(path.read_text())
    spec["data"]["reader"] = {"name": "imagefolder", "options": {"root": str(data), "train": "train", "val": "val",
                                                                 "test": "test"}}
    spec["train"]["seed"] = seed
    spec["output"] = str(out)
    target = out / f"{path.stem}.json"
    target.write_text(json.dumps(spec, indent=2))
    return target


def timed(args: list[str], cache: Path, log: Path) -> tuple[float, int, tuple[float, float, float]]:
    env = dict(os.environ, TLZOO_CACHE_DIR=str(cache))
    load = os.getloadavg()
    started = time.monotonic()
    with log.open("w") as handle:
        code = subprocess.run([str(TLZOO), *args], stdout=handle, stderr=subprocess.STDOUT, env=env).returncode
    return time.monotonic() - started, code, load


def summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def bench(name: str, work: Path, budget: str, methods: set[str] | None = None, seed: int | None = None) -> list[dict]:
    """Every method on one data set; `seed` (None: each method's own, 0) is tlzoo train's --seed and the
    recipes' train.seed, with its own run folders."""
    data = work / "data" / name
    if not data.is_dir():
        DATASETS[name](data)
    out = work / "runs" / name / ("" if seed is None else f"seed{seed}")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    seeded = [] if seed is None else ["--seed", str(seed)]
    runs = [("tlzoo train --time " + budget, ["train", str(data), "--time", budget, "--output", str(out / "auto"),
                                               *seeded], out / "auto")]
    for label, path in RECIPES.items():
        spec = recipe_spec(path, data, out, seed or 0)
        runs.append((label, ["run", str(spec), "--output", str(out / path.stem)], out / path.stem))
    for label, args, run_dir in runs:
        if methods is not None and run_dir.name not in methods:
            continue
        shutil.rmtree(run_dir, ignore_errors=True)
        cache = work / "caches" / name / run_dir.name
        shutil.rmtree(cache, ignore_errors=True)
        wall, code, load = timed(args, cache, out / f"{run_dir.name}.log")
        result = summary(run_dir)
        decisions = run_dir / "decisions.json"
        chosen = json.loads(decisions.read_text())["chosen"] if decisions.is_file() else None
        rows.append({"dataset": name, "seed": seed, "method": label, "dir": str(run_dir), "data": str(data),
                     "code": code, "wall": wall, "load": load,
                     "test_top1": (result.get("test") or {}).get("top1"),
                     "val_top1": (result.get("best") or {}).get("val_top1"),
                     "counts": (result.get("num_train"), result.get("num_val"), (result.get("test") or {}).get("count")),
                     "chosen": None if chosen is None else f"{chosen['backbone']}, {chosen['recipe']}"})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    return rows


def test_hits(run_dir: Path, data: Path) -> dict[str, bool]:
    """Each test image's path: whether the run's model predicts its folder's class (unknown never refused)."""
    found = subprocess.run([str(TLZOO), "predict", str(run_dir), str(data / "test"), "--format", "csv", "--no-reject",
                            "--top-k", "1"], capture_output=True, text=True)
    return {row["path"]: Path(row["path"]).parent.name == row["class"]
            for row in csv.DictReader(io.StringIO(found.stdout)) if not row.get("error")}


def paired(rows: list[dict]) -> str:
    """tlzoo train against the better fixed recipe on the same test images: the images only one of them gets
    right, and the exact two-sided McNemar p of that split (a small difference in top-1 may be a coin's)."""
    auto = next(r for r in rows if r["method"].startswith("tlzoo train"))
    other = max((r for r in rows if r is not auto and r["code"] == 0 and r["test_top1"] is not None),
                key=lambda r: r["test_top1"])
    data = Path(auto["data"])
    mine, theirs = test_hits(Path(auto["dir"]), data), test_hits(Path(other["dir"]), data)
    if not mine or not theirs:
        return "no paired comparison (tlzoo predict on the test split failed)"
    only_mine = sum(1 for path, hit in mine.items() if hit and not theirs.get(path, False))
    only_theirs = sum(1 for path, hit in theirs.items() if hit and not mine.get(path, False))
    n, k = only_mine + only_theirs, min(only_mine, only_theirs)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return (f"only tlzoo train right on {only_mine} test images, only {other['method']} on {only_theirs} "
            f"(exact McNemar p {p:.2f})")


def label(row: dict) -> str:
    return row["dataset"] if row["seed"] is None else f"{row['dataset']} seed {row['seed']}"


def table(rows: list[dict]) -> str:
    lines = ["| data set (train / val / test) | method | test top-1 | val top-1 | wall | load before | what was chosen |",
             "|---|---|---:|---:|---:|---|---|"]
    for row in rows:
        test = "-" if row["test_top1"] is None else f"{row['test_top1']:.4f}"
        val = "-" if row["val_top1"] is None else f"{row['val_top1']:.4f}"
        counts = " / ".join(str(c) for c in row["counts"])
        fail = "" if row["code"] == 0 else f" (exit {row['code']})"
        lines.append(f"| {label(row)} ({counts}) | {row['method']}{fail} | {test} | {val} | {row['wall']:.0f} s | "
                     f"{row['load'][0]:.1f} | {row['chosen'] or '-'} |")
    return "\n".join(lines)


def is_auto(row: dict) -> bool:
    return row["method"].startswith("tlzoo train")


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for name in dict.fromkeys(label(row) for row in rows):
        mine = [r for r in rows if label(r) == name]
        autos = [r for r in mine if is_auto(r)]
        auto = autos[0]["test_top1"] if autos else None
        fixed = [r["test_top1"] for r in mine if r not in autos and r["test_top1"] is not None and r["code"] == 0]
        if autos and not any(r not in autos for r in mine):
            continue  # tlzoo train alone (--methods auto): the table has its figures, there is nothing to compare
        if auto is None or not fixed:
            out.append(f"- {name}: incomplete")
            continue
        bar = max(fixed) - 0.005
        out.append(f"- {name}: tlzoo train {auto:.4f} against the better fixed recipe's {max(fixed):.4f}: target "
                   f"(>= {bar:.4f}) {'met' if auto >= bar else 'missed'}; wall {autos[0]['wall']:.0f} s; "
                   + paired(mine))
    out += seed_means(rows)
    means = {}
    for row in rows:
        means.setdefault(row["method"], []).append(row["test_top1"] if row["code"] == 0 else None)
    if len(out) > 1 and all(None not in scores for scores in means.values()):
        out.append("- mean test top-1 over these data sets: " + "; ".join(
            f"{method} {sum(scores) / len(scores):.4f}" for method, scores in means.items()))
    return out


def seed_means(rows: list[dict]) -> list[str]:
    """Per data set run with several seeds: each method's mean test top-1 over them, and the target on the means
    (what a method scores on a set is an expectation over training seeds; one seed's is a draw of it)."""
    out = []
    for name in dict.fromkeys(row["dataset"] for row in rows):
        mine = [r for r in rows if r["dataset"] == name]
        seeds = sorted({r["seed"] for r in mine if r["seed"] is not None})
        by_method = {}
        for row in mine:
            by_method.setdefault(row["method"], []).append(row["test_top1"] if row["code"] == 0 else None)
        if len(seeds) < 2 or any(None in scores or len(scores) != len(seeds) for scores in by_method.values()):
            continue
        means = {method: sum(scores) / len(scores) for method, scores in by_method.items()}
        auto = next((means[m] for m in means if m.startswith("tlzoo train")), None)
        fixed = [value for method, value in means.items() if not method.startswith("tlzoo train")]
        if auto is None or not fixed:  # one side only (--methods): the means are listed, with no target
            out.append(f"- {name}, mean over seeds {', '.join(map(str, seeds))}: " + "; ".join(
                f"{method} {value:.4f}" for method, value in means.items()))
            continue
        best = max(fixed)
        out.append(f"- {name}, mean over seeds {', '.join(map(str, seeds))}: " + "; ".join(
            f"{method} {value:.4f}" for method, value in means.items())
            + f": target on the means (>= {best - 0.005:.4f}) {'met' if auto >= best - 0.005 else 'missed'}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", default="10m")
    parser.add_argument("--datasets", default=",".join(DEFAULT_SETS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/tlzoo-auto-bench"))
    parser.add_argument("--methods", default=None, help="run only these: auto, flowers12, flowers12_lite2")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--seeds", default=None, help="comma-separated training seeds: every method on every set "
                                                      "with each (default: each method's own, 0)")
    args = parser.parse_args()
    started, load = time.monotonic(), os.getloadavg()
    rows = []
    methods = None if args.methods is None else set(args.methods.split(","))
    seeds = [None] if args.seeds is None else [int(seed) for seed in args.seeds.split(",")]
    for name in args.datasets.split(","):
        for seed in seeds:
            rows += bench(name, args.work, args.time, methods, seed)
    text = io.StringIO()
    text.write(f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: tlzoo train --time {args.time} against "
               "the fixed recipes (benchmarks/auto_train_bench.py)\n\n")
    text.write(f"{cpu_name()}; {os.cpu_count()} cores; {platform.python_version()}; each method in its own process "
               f"with an empty activation cache. Load average before {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}; "
               f"after {', '.join(f'{v:.2f}' for v in os.getloadavg())}; the bench took "
               f"{(time.monotonic() - started) / 60:.0f} min.\n\n")
    text.write(table(rows) + "\n\n" + "\n".join(verdicts(rows)) + "\n")
    print(text.getvalue())
    if not args.no_append:
        with RESULTS.open("a") as handle:
            handle.write(text.getvalue())


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
