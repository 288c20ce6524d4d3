"""Recipe features on and off, each the mean of 3 seeds on flowers12; appends a table to RESULTS.md.

Settings are judged on a validation split of the training folder (reader option
val_split 0.2: 576 train / 144 val images); flowers12/test plays no part (it is
kept for the final spec's one score). Every comparison shares its "off" runs with
the base spec of the same seed. TTA needs no training: the base runs' best models
are evaluated again on the validation split with `--tta` (off: the runs' own best
validation, which `tlzoo evaluate` reproduces).

    .venv/bin/python benchmarks/recipes_bench.py [--data ../shared/datasets/flowers12] [--seeds 0 1 2] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from report import cpu_model  # benchmarks/report.py, beside this script

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"

HEAD = {  # the demo's recipe on a validation split: head only on frozen lite0, cached features
    "name": "recipes-head",
    "backbone": "efficientnet_lite0",
    "data": {"reader": {"name": "imagefolder", "options": {"train": "train", "val_split": 0.2}},
             "batch_size": 32, "augment": "none"},
    "train": {"strategy": "head_only", "epochs": 10, "label_smoothing": 0.1,
              "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001}, "scheduler": "cosine"},
    "report": {"enabled": False},
}
FINETUNE = {  # fine-tuning the top three groups on cached activations of the frozen rest
    **copy.deepcopy(HEAD), "name": "recipes-finetune",
    "train": {**copy.deepcopy(HEAD["train"]), "strategy": {"name": "partial", "options": {"groups": 3}},
              "epochs": 3, "backbone_lr_mult": 0.5},
}
# (feature, base spec, overrides of the "on" runs)
TRAINED = [
    ("EMA (decay 0.998, warm-up)", "head", {"train.ema.enabled": True}),
    ("mixup alpha 0.2 (manifold, on cached features)", "head", {"train.mix.mixup_alpha": 0.2}),
    ("layer-wise lr decay 0.7", "finetune", {"train.layer_decay": 0.7}),
]
TTA_MODES = ("flip",)  # flip_crops: 3x the passes of flip (--tta-modes flip flip_crops)


def spec_for(base: str, data: Path, seed: int, overrides: dict) -> dict:
    spec = copy.deepcopy(HEAD if base == "head" else FINETUNE)
    spec["data"]["reader"]["options"]["root"] = str(data)
    spec["train"]["seed"] = seed
    for dotted, value in overrides.items():
        target = spec
        keys = dotted.split(".")
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    return spec


def train(spec: dict, output: Path) -> dict:
    import tlzoo

    started = time.perf_counter()
    result = tlzoo.run(spec, output=output / f"{spec['name']}-{time.time_ns()}")
    summary = result.summary
    return {"run_dir": result.run_dir, "wall": time.perf_counter() - started,
            "val_top1": summary["best"]["val_top1"], "val_loss": summary["best"]["val_loss"]}


def evaluate_tta(run_dir: Path, mode: str) -> dict:
    from tlzoo.engine.evaluation import evaluate_run
    from tlzoo.engine.inference import load_run
    from tlzoo.registry import get_registry

    loaded = load_run(run_dir, get_registry())
    loaded.tta = mode
    started = time.perf_counter()
    val, _ = evaluate_run(loaded, get_registry(), None, log=lambda line: None)
    return {"val_top1": val.top1, "val_loss": val.loss, "wall": time.perf_counter() - started}


def mean(rows: list[dict], key: str) -> float:
    return statistics.fmean(row[key] for row in rows)


def row(feature: str, off: list[dict], on: list[dict], wall_note: str) -> str:
    gain = mean(on, "val_top1") - mean(off, "val_top1")
    verdict = "helps" if gain > 0 and mean(on, "val_loss") <= mean(off, "val_loss") else \
        ("mixed" if gain > 0 or mean(on, "val_loss") < mean(off, "val_loss") else "does not help")
    return (f"| {feature} | {mean(off, 'val_top1'):.4f} | {mean(on, 'val_top1'):.4f} | {gain:+.4f} | "
            f"{mean(off, 'val_loss'):.4f} | {mean(on, 'val_loss'):.4f} | {wall_note} | {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets" / "flowers12")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="head-only comparisons and TTA only")
    parser.add_argument("--only", choices=["head", "finetune"], help="the comparisons of one base spec")
    parser.add_argument("--tta-modes", nargs="+", default=list(TTA_MODES), choices=["flip", "flip_crops"])
    args = parser.parse_args()
    data = args.data.resolve()
    load_before = os.getloadavg()
    started = time.perf_counter()
    output = Path(tempfile.mkdtemp(prefix="tlzoo-recipes-"))
    trained = [t for t in TRAINED if not (args.quick and t[1] == "finetune") and args.only in (None, t[1])]
    header = (f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: recipe features on and off "
              f"(benchmarks/recipes_bench.py)\n\n"
              f"{cpu_model()}; {os.cpu_count()} cores; torch {__import__('torch').__version__}; seeds {args.seeds}. "
              f"Load average before {', '.join(f'{v:.2f}' for v in load_before)} (on 2 cores a load above ~2 means "
              "other work shared the machine and stretched every wall time). Means over the seeds; chosen on val "
              "(144 images split from train); flowers12/test is not used. Wall: mean seconds of a whole run "
              "(off / on), scan and model building included.\n\n"
              "Specs: head = lite0 head only, AdamW 3e-3, cosine, label smoothing 0.1, 10 epochs, no augmentation; "
              "finetune = the same with strategy partial (top 3 groups + head), backbone_lr_mult 0.5, 3 epochs.\n\n"
              "| feature | val top-1 off | on | gain | val loss off | on | wall | verdict |\n"
              "|---|---:|---:|---:|---:|---:|---|---|\n")
    append(header)  # rows are appended as they come, so a cut-short benchmark still leaves its figures
    base_runs: dict[str, list[dict]] = {}

    def base(name: str) -> list[dict]:
        if name not in base_runs:
            base_runs[name] = [train(spec_for(name, data, seed, {}), output) for seed in args.seeds]
        return base_runs[name]

    for index, (feature, name, overrides) in enumerate(trained):
        off = base(name)
        on = [train(spec_for(name, data, seed, overrides), output) for seed in args.seeds]
        append(row(feature, off, on, f"{mean(off, 'wall'):.0f} / {mean(on, 'wall'):.0f} s") + "\n")
        if name == "head" and (index + 1 == len(trained) or trained[index + 1][1] != "head"):
            for mode in args.tta_modes:  # after the head-only rows, before the (slower) fine-tuning ones
                on = [evaluate_tta(r["run_dir"], mode) for r in off]
                append(row(f"TTA {mode} (evaluate --tta on the head runs)", off, on,
                           f"{mean(on, 'wall'):.1f} s a validation pass") + "\n")
    append(f"\nBenchmark wall time {(time.perf_counter() - started) / 60:.1f} min; load average after "
           f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}.\n")
    print(f"appended to {RESULTS}", file=sys.stderr)


def append(text: str) -> None:
    print(text, end="", flush=True)
    with RESULTS.open("a") as results:
        results.write(text)


if __name__ == "__main__":
    main()
