"""What tlzoo train would choose on few-shot sets if a fine-tune had to beat the head by a margin; appends to RESULTS.md.

Reads the run folders that `auto_train_bench.py --work DIR` left (each set's `auto/` run with its
decisions.json, and the demo and lite2 recipes' runs beside it), replays the search's choice between
the head and the fine-tune trials under the rule below, and trains what the rule would have chosen where
that differs (the run's own spec with the other recipe: the same splits, seed and settings), so each
changed choice has a real test top-1. Nothing of the search is run again: the trials' validation scores
are the ones the search measured.

The rule, fixed before any set's figures were read here: on a set whose median class has at most
--max-per-class training images, a fine-tune replaces the head only when it validated at least --margin
images more than the head's mean over its seeds (today: unless it validated more than one image fewer).
Between fine-tunes the search's own outcome stands (more images right; on equal images, the lower loss,
which decisions.json records only as kept or not). Sets with more images a class are left as they are.

    python benchmarks/fewshot_margin.py --work /tmp/atb [--margin 2] [--max-per-class 10] [--no-append]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results_md import publish  # benchmarks/, beside this script

HERE = Path(__file__).resolve().parent
TLZOO = Path(sys.executable).parent / "tlzoo"
RECIPE = re.compile(r"(?P<backbone>[^,]+), (?:(?P<head>head only)|top (?P<groups>\d+) groups \+ head), "
                    r"lr (?P<lr>[0-9.e-]+), (?P<epochs>\d+) epochs")


def parse(candidate: str) -> dict:
    found = RECIPE.match(candidate)
    return {"backbone": found["backbone"], "groups": 0 if found["head"] else int(found["groups"]),
            "lr": float(found["lr"]), "epochs": int(found["epochs"])}


def median_per_class(spec: dict) -> float:
    options = spec["data"]["reader"]["options"]
    train = Path(options["root"]) / options["train"]
    return statistics.median(sum(1 for f in folder.iterdir() if f.is_file()) for folder in train.iterdir()
                             if folder.is_dir())


def replay(decisions: dict, num_val: int, margin: float) -> dict:
    """The recipe the rule keeps: the head unless a trial beats its mean by `margin` images."""
    rows = decisions["candidates"]
    head_row = next(r for r in rows if r["step"] == "head sweep")
    head = parse(head_row["candidate"])
    head_correct = (head_row["val_top1"] if head_row["val_top1"] is not None else
                    next(r["val_top1"] for r in rows if r["step"] == "probe" and r["candidate"] == head["backbone"]))
    head_correct *= num_val
    best, best_correct, same_as_search = head, head_correct, True
    chain_open = True
    for row in (r for r in rows if r["step"] == "fine-tune trial" and r["val_top1"] is not None):
        trial, correct = parse(row["candidate"]), round(row["val_top1"] * num_val)
        if trial["backbone"] == head["backbone"] and not chain_open:
            continue  # the next groups of the head's backbone are tried only while each one wins
        if best["groups"] == 0:
            wins = correct >= head_correct + margin
        elif same_as_search:
            wins = row["kept"]  # the search's own comparison between fine-tunes
        else:
            wins = correct > best_correct  # an equal count would need the validation losses: kept as it was
        if wins:
            best, best_correct = trial, correct
        else:
            if row["kept"]:
                same_as_search = False
            if trial["backbone"] == head["backbone"]:
                chain_open = False
    return best


def run_recipe(auto_dir: Path, recipe: dict, out: Path) -> float | None:
    spec = json.loads((auto_dir / "spec.json").read_text())
    spec["backbone"]["name"] = recipe["backbone"]
    train = spec["train"]
    train["epochs"], train["optimizer"]["lr"] = recipe["epochs"], recipe["lr"]
    if recipe["groups"]:
        train["strategy"], train["keep"], train["backbone_lr_mult"] = {
            "name": "partial", "options": {"groups": recipe["groups"]}}, "best", 0.5
    else:
        train["strategy"], train["keep"] = "head_only", "last"
        train.pop("backbone_lr_mult", None)
    spec["output"] = str(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "spec.json"
    path.write_text(json.dumps(spec, indent=2))
    subprocess.run([str(TLZOO), "run", str(path), "--output", str(out / "run")], capture_output=True)
    summary = out / "run" / "summary.json"
    return json.loads(summary.read_text())["test"]["top1"] if summary.is_file() else None


def describe(recipe: dict) -> str:
    what = "head" if recipe["groups"] == 0 else f"top {recipe['groups']}"
    return f"{recipe['backbone'].replace('efficientnet_', '')} {what}"


def test_top1(run_dir: Path) -> float | None:
    path = run_dir / "summary.json"
    return (json.loads(path.read_text()).get("test") or {}).get("top1") if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--margin", type=float, default=2.0)
    parser.add_argument("--max-per-class", type=float, default=10)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    lines = ["| run | median train a class | chosen | test | the rule's choice | test | demo | lite2 partial | "
             "target (rule) |", "|---|---:|---|---:|---|---:|---:|---:|---|"]
    tally = {"runs": 0, "changed": 0, "met_before": 0, "met_after": 0, "before": [], "after": []}
    for auto_dir in sorted(args.work.glob("runs/**/auto")):
        decisions_file = auto_dir / "decisions.json"
        if not decisions_file.is_file():
            continue
        decisions, spec = json.loads(decisions_file.read_text()), json.loads((auto_dir / "spec.json").read_text())
        per_class = median_per_class(spec)
        if per_class > args.max_per_class:
            continue
        summary = json.loads((auto_dir / "summary.json").read_text())
        chosen = parse(f"{decisions['chosen']['backbone']}, {decisions['chosen']['recipe']}")
        rule = replay(decisions, summary["num_val"], args.margin)
        before = summary["test"]["top1"]
        after = before if rule == chosen else run_recipe(auto_dir, rule, auto_dir.parent / "margin-rule")
        fixed = [t for t in (test_top1(auto_dir.parent / "flowers12"), test_top1(auto_dir.parent / "flowers12_lite2"))
                 if t is not None]
        bar = max(fixed) - 0.005 if fixed else None
        name = str(auto_dir.parent.relative_to(args.work / "runs"))
        tally["runs"] += 1
        tally["changed"] += rule != chosen
        tally["before"].append(before)
        tally["after"].append(after if after is not None else float("nan"))
        if bar is not None:
            tally["met_before"] += before >= bar
            tally["met_after"] += after is not None and after >= bar
        verdict = "-" if bar is None or after is None else ("met" if after >= bar else "missed")
        lines.append(f"| {name} | {per_class:g} | {describe(chosen)} | {before:.4f} | {describe(rule)} | "
                     f"{'-' if after is None else f'{after:.4f}'} | "
                     + " | ".join("-" if t is None else f"{t:.4f}" for t in (test_top1(auto_dir.parent / "flowers12"),
                                                                             test_top1(auto_dir.parent /
                                                                                       "flowers12_lite2")))
                     + f" | {verdict} |")
        print(lines[-1], file=sys.stderr, flush=True)
    mean = lambda values: sum(values) / len(values) if values else float("nan")  # noqa: E731
    text = (f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: a fine-tune margin for few-shot sets, "
            f"replayed on {args.work.name}'s runs (benchmarks/fewshot_margin.py)\n\n"
            f"Rule: where the median class has at most {args.max_per_class:g} training images, a fine-tune replaces "
            f"the head only when it validated at least {args.margin:g} images more than the head's mean. "
            f"{tally['runs']} runs, {tally['changed']} choices changed; target met {tally['met_before']} -> "
            f"{tally['met_after']} times; mean test top-1 {mean(tally['before']):.4f} -> {mean(tally['after']):.4f}. "
            f"The changed choices trained in {(time.monotonic() - started) / 60:.0f} min.\n\n" + "\n".join(lines) + "\n")
    publish(text, append=not args.no_append)


if __name__ == "__main__":
    main()
