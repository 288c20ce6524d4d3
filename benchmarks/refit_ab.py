"""Would the final model of `tlzoo train` do better trained on the training and validation images together?

For each finished `tlzoo train` run directory given (auto_train_bench.py's `auto`
runs), this reads the search's decisions: the head the sweep chose and the
fine-tune trial that was kept, with the epoch its trial kept. Each is trained
twice on that run's own splits and seed, as an ordinary run without report,
calibration or unknown threshold:

- train: on the training split, as the final run trains now (the fine-tune
  stopped at its kept epoch, whose weights its final run keeps; the head's last
  epoch, which it keeps);
- refit: on the training and validation images together, the same epochs
  (the validation split still runs each epoch, on images it trained on, so its
  figures mean nothing here and no choice is made on them).

and both are scored once on the run's test split.

    python benchmarks/refit_ab.py RUN_DIR... [--no-append]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import re
import tempfile
import time
from pathlib import Path

from tlzoo.auto.fold_check import ScoreAt
from tlzoo.auto.recipes import Recipe, base_spec, candidate_spec
from tlzoo.data.labelled import load_labelled
from tlzoo.engine.extras import RunExtras
from tlzoo.engine.run import run_spec
from tlzoo.registry import get_registry
from tlzoo.spec import resolve_spec

from auto_train_bench import cpu_name  # benchmarks/, beside this script
from results_md import publish

HEAD = re.compile(r"(\S+), head only, lr ([\d.e-]+), (\d+) epochs")
FINETUNE = re.compile(r"(\S+), top (\d+) groups \+ head, lr ([\d.e-]+), (\d+) epochs")


@dataclasses.dataclass
class Case:
    run: Path
    reader: dict
    seed: int
    backbone: str
    recipe: Recipe
    stop: int  # the epoch whose weights are kept
    chosen: bool  # the run's final choice


def cases(run: Path) -> list[Case]:
    decisions = json.loads((run / "decisions.json").read_text())
    spec = json.loads((run / "spec.json").read_text())
    rows, chosen = decisions["candidates"], decisions["chosen"]
    found = []
    head = HEAD.fullmatch([row for row in rows if row["step"] == "head sweep"][-1]["candidate"])
    if head:
        recipe = Recipe(0, float(head.group(2)), int(head.group(3)))
        found.append((head.group(1), recipe, recipe.epochs))
    kept = [row for row in rows if row["step"] == "fine-tune trial" and row["kept"]]
    if kept:
        tune = FINETUNE.fullmatch(kept[-1]["candidate"])
        recipe = Recipe(int(tune.group(2)), float(tune.group(3)), int(tune.group(4)))
        checks = [row for row in rows if row["step"] == "fold check" and row["seconds"] is not None]
        epoch = (int(re.search(r"kept epoch (\d+)", checks[-1]["reason"]).group(1)) if checks
                 else decisions["final"]["best_epoch"])
        found.append((tune.group(1), recipe, epoch))
    return [Case(run, spec["data"]["reader"], spec["train"]["seed"], backbone, recipe, stop,
                 backbone == chosen["backbone"] and recipe.describe() == chosen["recipe"])
            for backbone, recipe, stop in found]


def test_top1(case: Case, refit: bool) -> float:
    with tempfile.TemporaryDirectory() as out:
        spec = candidate_spec(base_spec("refit-ab", case.reader, case.seed, out), case.backbone, case.recipe)
        spec["report"] = {"enabled": False}
        spec["train"].update(calibration="none", unknown="none", keep="last")
        resolved = resolve_spec(spec, get_registry(), Path.cwd(), "refit_ab")
        data = load_labelled(resolved)
        if refit:
            data = dataclasses.replace(data, train=list(data.train) + list(data.val))
        hooks = [ScoreAt(case.stop)] if case.stop < case.recipe.epochs else []
        result = run_spec(resolved, Path(out) / "run", stream=io.StringIO(),
                          extras=RunExtras(data=data, epoch_hooks=hooks))
        return result.summary["test"]["top1"]


def set_name(run: Path) -> str:
    """auto_train_bench.py's runs are WORK/runs/SET/auto or WORK/runs/SET/seedN/auto."""
    return run.parent.parent.name if run.parent.name.startswith("seed") else run.parent.name


def machine_line(load: tuple[float, float, float], started: float) -> str:
    return (f"{cpu_name()}; {os.cpu_count()} cores. Load average before {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}; "
            f"the bench took {(time.monotonic() - started) / 60:.0f} min.")


def run_dirs_arguments(doc: str) -> argparse.Namespace:
    """RUN_DIR... [--no-append]: the command line of the scripts that read finished tlzoo train runs."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--no-append", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = run_dirs_arguments(__doc__)
    started, load = time.monotonic(), os.getloadavg()
    lines = []
    for run in args.runs:
        for case in cases(run):
            train, refit = test_top1(case, False), test_top1(case, True)
            line = (f"| {set_name(run)} seed {case.seed} | {case.backbone}, {case.recipe.describe()}, kept epoch {case.stop}"
                    f"{' (chosen)' if case.chosen else ''} | {train:.4f} | {refit:.4f} | {100 * (refit - train):+.1f} |")
            print(line, flush=True)
            lines.append(line)
    text = (f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: the final model trained on train + val "
            "(refit) or on train (benchmarks/refit_ab.py)\n\n"
            f"{machine_line(load, started)}\n\n"
            "| run | recipe | test top-1, train | test top-1, refit | points |\n|---|---|---:|---:|---:|\n"
            + "\n".join(lines) + "\n")
    publish(text, append=not args.no_append)


if __name__ == "__main__":
    main()
