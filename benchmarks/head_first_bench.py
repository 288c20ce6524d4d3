"""A fine-tune from a random head against the same fine-tune with its head fitted first (train.head_first,
LP-FT), on auto_train_bench.py's held-out data sets; appends to RESULTS.md.

Per data set, three runs of tlzoo train's candidate specs (tlzoo.auto.recipes) on one backbone: the head
alone (lr 3e-3, 10 epochs, its last epoch kept), the top GROUPS groups fine-tuned from a random head, and the
same fine-tune with `train.head_first` at the head's setting. Each is scored once on the data set's test
split; validation top-1 and loss are the kept epoch's. The three share one activation cache (accuracy, not
time, is measured here).

    python benchmarks/head_first_bench.py [--datasets a,b] [--work /tmp/tlzoo-auto-bench] [--backbone B]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from results_md import publish  # benchmarks/, beside this script

HERE = Path(__file__).resolve().parent
SMALL_SETS = ("flowers12-resplit", "flowers12-imbalanced-128", "patches", "flowers12-fewshot", "patches-fewshot",
              "flowers12-15shot-160", "flowers12-fewshot-s21", "flowers12-fewshot-s22", "flowers12-fewshot-s23",
              "patches-fewshot-s21", "patches-fewshot-s22", "patches-fewshot-s23", "glyphs-fewshot",
              "glyphs-imbalanced", "shapes-fewshot", "shapes", "flowers12-fewshot-s24", "flowers12-fewshot-s25",
              "patches-fewshot-s24", "glyphs-imbalanced-s54")
HEAD = (3e-3, 10)


def three_runs(name: str, work: Path, backbone: str, groups: int) -> dict[str, dict]:
    import tlzoo
    from bench_sets import DATASETS
    from tlzoo.auto.recipes import Recipe, base_spec, candidate_spec, finetune_epochs

    data = work / "data" / name
    if not data.is_dir():
        DATASETS[name](data)
    reader = {"name": "imagefolder", "options": {"root": str(data), "train": "train", "val": "val", "test": "test"}}
    base = base_spec(name, reader, 0, str(work / "head_first" / name))
    base["report"] = {"enabled": False}
    epochs = finetune_epochs(sum(1 for path in (data / "train").rglob("*") if path.is_file()))
    fitted = candidate_spec(base, backbone, Recipe(groups, HEAD[0], epochs))
    fitted["train"]["head_first"] = {"lr": HEAD[0], "epochs": HEAD[1]}
    specs = {"head only": candidate_spec(base, backbone, Recipe(0, *HEAD)),
             "fine-tune": candidate_spec(base, backbone, Recipe(groups, HEAD[0], epochs)), "fitted first": fitted}
    out = {}
    for label, spec in specs.items():
        run_dir = work / "head_first" / name / label.replace(" ", "_")
        shutil.rmtree(run_dir, ignore_errors=True)
        result = tlzoo.run(spec, output=run_dir)  # its log goes to stderr
        best = result.summary["best"]
        out[label] = {"test": result.summary["test"]["top1"], "val": best["val_top1"], "val_loss": best["val_loss"],
                      "counts": (result.summary["num_train"], result.summary["num_val"],
                                 result.summary["test"]["count"])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(SMALL_SETS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/tlzoo-auto-bench"))
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TLZOO_CACHE_DIR", str(args.work / "head_first" / "cache"))
    from auto_train_bench import cpu_name

    started = time.monotonic()
    lines = ["| data set (train / val / test) | head only | fine-tune | fitted first | difference | val top-1 "
             "(fine-tune / fitted) | val loss (fine-tune / fitted) |", "|---|---:|---:|---:|---:|---|---|"]
    differences = []
    for name in args.datasets.split(","):
        runs = three_runs(name, args.work, args.backbone, args.groups)
        tuned, fitted = runs["fine-tune"], runs["fitted first"]
        differences.append(fitted["test"] - tuned["test"])
        counts = " / ".join(str(count) for count in tuned["counts"])
        lines.append(f"| {name} ({counts}) | {runs['head only']['test']:.4f} | {tuned['test']:.4f} | "
                     f"{fitted['test']:.4f} | {100 * differences[-1]:+.2f} | {tuned['val']:.4f} / "
                     f"{fitted['val']:.4f} | {tuned['val_loss']:.3f} / {fitted['val_loss']:.3f} |")
        print(lines[-1], flush=True)
    better, worse = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
    text = (f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: a fine-tune's head random or fitted first "
            f"(train.head_first; benchmarks/head_first_bench.py)\n\n{cpu_name()}; {os.cpu_count()} cores; "
            f"{args.backbone}, top {args.groups} groups + head, lr {HEAD[0]:g}, backbone_lr_mult 0.5, the epochs "
            f"tlzoo train gives them; fitted first: lr {HEAD[0]:g}, {HEAD[1]} epochs; test top-1. The bench took "
            f"{(time.monotonic() - started) / 60:.0f} min.\n\n" + "\n".join(lines)
            + f"\n\nFitted first against a random head: mean {100 * sum(differences) / len(differences):+.2f} points "
            f"of test top-1; better on {better}, worse on {worse} of {len(differences)}.\n")
    publish(text, append=not args.no_append)


if __name__ == "__main__":
    main()
