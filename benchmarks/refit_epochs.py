"""How long should a refitted fine-tune train? Its kept epoch, all its epochs, or its kept epoch as a whole schedule.

A fine-tune of `tlzoo train` keeps its epoch of best validation top-1; on a
validation split of 40-100 images that epoch can come early and by one image
(flowers12-fewshot-s23: epoch 3 of 8 at 57 of 60, epochs 4-8 at 56), with the
learning rate still high there. The refit (`train.refit`) then trains on train
+ val and stops after that epoch. For each finished `tlzoo train` run given whose
chosen fine-tune kept an epoch before its last, the chosen recipe is trained on
train + val (as refit_ab.py does) three ways and scored once on test:

- kept: stopped after the kept epoch, the schedule planned for all epochs: what
  the final run did before 0274b9d, so its summary's test top-1 (refit_ab.py
  trained it again and gave the same figure on all 20 recipes it ran); for runs
  of 0274b9d on, whose refit trains all the epochs, this column is "last" again;
- last: all the planned epochs;
- short: as many epochs as the kept one, the schedule planned for those.

    python benchmarks/refit_epochs.py RUN_DIR... [--no-append]
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from refit_ab import cases, machine_line, run_dirs_arguments, set_name, test_top1  # benchmarks/, beside this script
from results_md import publish


def variants(case, refitted_test_top1: float) -> dict[str, float]:
    planned = case.recipe.epochs
    return {"kept": refitted_test_top1,
            "last": test_top1(dataclasses.replace(case, stop=planned), True),
            "short": test_top1(dataclasses.replace(case, recipe=dataclasses.replace(case.recipe, epochs=case.stop)),
                               True)}


def main() -> None:
    args = run_dirs_arguments(__doc__)
    started, load = time.monotonic(), os.getloadavg()
    lines, sums = [], {"kept": 0.0, "last": 0.0, "short": 0.0}
    for run in args.runs:
        summary = json.loads((run / "summary.json").read_text())
        if "refit" not in summary:  # a run of before the refit, or on a large validation split
            continue
        for case in cases(run):
            if not (case.chosen and case.recipe.groups and case.stop < case.recipe.epochs):
                continue
            scores = variants(case, summary["test"]["top1"])
            for name, value in scores.items():
                sums[name] += value
            line = (f"| {set_name(run)} seed {case.seed} | {case.backbone}, {case.recipe.describe()}, kept epoch "
                    f"{case.stop} | {scores['kept']:.4f} | {scores['last']:.4f} | {scores['short']:.4f} |")
            print(line, flush=True)
            lines.append(line)
    means = " | ".join(f"{sums[name] / max(1, len(lines)):.4f}" for name in ("kept", "last", "short"))
    text = (f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: how long a refitted fine-tune trains "
            "(benchmarks/refit_epochs.py)\n\n"
            f"{machine_line(load, started)}\n\n"
            "| run | chosen fine-tune | test top-1, kept epoch | all epochs | kept epoch as the schedule |\n"
            "|---|---|---:|---:|---:|\n" + "\n".join(lines) + f"\n| mean of {len(lines)} | | {means} |\n")
    publish(text, append=not args.no_append)


if __name__ == "__main__":
    main()
