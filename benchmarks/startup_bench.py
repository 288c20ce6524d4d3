"""Start-up of `tlzoo predict RUN_DIR one.jpg` (issue 23): before and after, in one invocation; appends to RESULTS.md.

    .venv/bin/python benchmarks/startup_bench.py [--run-dir RUN] [--before REV] [--repeats 7]

Wall time of whole processes, as a user waits for them, each repeated and interleaved
(so that the machine's drifting load spreads over all of them alike), min and median,
with the load average before each round:

- `python -c pass`, `import torch`, and `import torch, timm` (the floor of any predict
  that builds a timm network; timm imports torchvision and torch._dynamo);
- `tlzoo predict RUN_DIR one.jpg` of the code at `--before` (default: the last commit
  before the lite network became plain torch), exported with `git archive` to a
  temporary folder that shadows the installed tlzoo through PYTHONPATH;
- the same command of this tree, and again with OpenMP's threads waiting passively
  (OMP_WAIT_POLICY=PASSIVE: on a loaded machine spinning threads wait for each other).

Then one `python -X importtime` of each predict, summed by top-level package. Without
--run-dir it first trains the demo (examples/flowers12.json) into a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
BEFORE = "52656c9"  # main when this work began: efficientnet_lite built by timm, eval transforms by torchvision
sys.path.insert(0, str(HERE))

from report import cpu_line, load_line  # noqa: E402

PREDICT = "from tlzoo.cli.main import main; main(['predict', {run!r}, {image!r}])"


def export_revision(rev: str, folder: Path) -> Path:
    """The package tree of `rev` as an importable `tlzoo` (core/ is tlzoo; plugins/ and registry/ inside it)."""
    tree = folder / "tree"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", rev, "core", "plugins", "registry"], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    package = folder / "path" / "tlzoo"
    shutil.copytree(tree / "core", package)
    shutil.copytree(tree / "plugins", package / "plugins")
    shutil.copytree(tree / "registry", package / "registry")
    return folder / "path"


def timed(command: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr}")
    return seconds


def import_breakdown(code: str, env: dict | None = None) -> dict[str, float]:
    """Seconds of `python -X importtime -c code` by package: each module's own time, summed by its top name."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                            env=env, check=True)
    totals: dict[str, float] = {}
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, _, name = line[len("import time:"):].split("|")
        package = name.strip().split(".")[0]
        totals[package] = totals.get(package, 0.0) + int(own) / 1e6
    return totals


def train_demo(folder: Path, env: dict | None = None) -> Path:
    """The demo trained by the code `env` imports: a run directory of newer code may hold what older code refuses
    (the trust record of issue 22), so each side predicts with a run of its own."""
    subprocess.run([sys.executable, "-m", "tlzoo", "run", str(REPO / "examples" / "flowers12.json"), "--output",
                    str(folder)], check=True, capture_output=True, env=env)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, help="a finished run of efficientnet_lite0 (default: train the demo)")
    parser.add_argument("--image", type=Path, help="the image to predict (default: the run's first test image)")
    parser.add_argument("--before", default=BEFORE, help=f"git revision to compare against (default {BEFORE})")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tlzoo-startup-") as work:
        work = Path(work)
        run_dir = args.run_dir or train_demo(work / "demo-now")
        image = args.image or sorted((REPO.parent / "shared" / "datasets" / "flowers12" / "test").rglob("*.jpg"))[0]
        before_env = {**os.environ, "PYTHONPATH": str(export_revision(args.before, work))}
        before_run = train_demo(work / "demo-before", before_env)
        predict = [sys.executable, "-c", PREDICT.format(run=str(run_dir), image=str(image))]
        before_predict = [sys.executable, "-c", PREDICT.format(run=str(before_run), image=str(image))]
        cases = {
            "python -c pass": ([sys.executable, "-c", "pass"], None),
            "import torch": ([sys.executable, "-c", "import torch"], None),
            "import torch, timm (the old floor)": ([sys.executable, "-c", "import torch, timm"], None),
            f"tlzoo predict, before ({args.before})": (before_predict, before_env),
            "tlzoo predict, now": (predict, None),
            # two intra-op threads on shared cores spin-wait for each other; passive waiting shows what that costs
            "tlzoo predict, now, OMP_WAIT_POLICY=PASSIVE": (predict, {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}),
        }
        for command, env in cases.values():  # warm the page cache and .pyc files before timing
            timed(command, env)
        times: dict[str, list[float]] = {name: [] for name in cases}
        loads = []
        for _ in range(args.repeats):
            loads.append(os.getloadavg()[0])
            for name, (command, env) in cases.items():
                times[name].append(timed(command, env))
        breakdown = {"before": import_breakdown(before_predict[-1], before_env), "now": import_breakdown(predict[-1])}
        heavy = "; import sys; print([m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules])"
        imported = {label: subprocess.run([sys.executable, "-c", code[-1] + heavy], capture_output=True, text=True,
                                          env=env, check=True).stdout.strip().splitlines()[-1]
                    for label, code, env in (("before", before_predict, before_env), ("now", predict, None))}

    rows = [f"| {name} | {min(values):.2f} | {statistics.median(values):.2f} | {max(values):.2f} |"
            for name, values in times.items()]
    packages = sorted(set(breakdown["before"]) | set(breakdown["now"]),
                      key=lambda p: -max(breakdown["before"].get(p, 0), breakdown["now"].get(p, 0)))
    import_rows = [f"| {p} | {breakdown['before'].get(p, 0):.2f} | {breakdown['now'].get(p, 0):.2f} |"
                   for p in packages[:8]]
    import_rows.append(f"| all imports | {sum(breakdown['before'].values()):.2f} | "
                       f"{sum(breakdown['now'].values()):.2f} |")
    section = "\n".join([
        f"## tlzoo predict start-up, one image ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        cpu_line() + f" The run: {run_dir} (efficientnet_lite0; under `precision: auto` predict takes the folded "
        "path). Machine shared with other work: "
        f"load average (1 min) {min(loads):.2f}-{max(loads):.2f} over the rounds; {load_line()} at the end.",
        "",
        f"Wall seconds of the whole process, {args.repeats} interleaved rounds after one warm-up:",
        "",
        "| command | min | median | max |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        "One `python -X importtime` of each predict: seconds spent importing each package's modules (their own "
        "time, summed by top-level name):",
        "",
        "| package | before | now |",
        "|---|---:|---:|",
        *import_rows,
        "",
        f"timm, torchvision, torch._dynamo imported by predict: before {imported['before']}, now {imported['now']}.",
        "",
    ])
    print(section)
    if not args.no_write:
        with RESULTS.open("a") as handle:
            handle.write("\n" + section)


if __name__ == "__main__":
    main()
