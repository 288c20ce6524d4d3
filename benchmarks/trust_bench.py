"""Which out-of-distribution score, and does the temperature help? Measured on tlzoo's own runs; appends to RESULTS.md.

For each class split of flowers12 (8 classes known, 4 held out), tlzoo trains a
run on the known classes (reader: train folder with val_split 0.2 for the
validation split, the test folder of the known classes as held-out test), then
scores, with the run's best model in its own precision path:

- known: the held-out test images of the 8 classes;
- near unknown: every image (train and test folders) of the 4 held-out classes;
- far unknown: images of other domains made here (noise, gradients, stripes and
  checkerboards, shapes, rendered text documents and screenshots, skimage.data
  photographs), seeded, 224 px.

Per candidate score: AUROC (known against unknown), the share of unknowns
accepted when 95 % of the known test images are kept (FPR95, the threshold at
the known test images' 95th percentile), and the share accepted at the
threshold chosen on the validation split (as tlzoo does), with the known test
share it keeps. Each score is fitted on the run's training images (eval
transform) as tlzoo fits it. Calibration before and after the temperature comes
from the runs' summary.json (fitted on val, measured on the held-out test).

    .venv/bin/python benchmarks/trust_bench.py [--data ../shared/datasets/flowers12] [--splits 3] [--finetune]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from far_images import far_images  # benchmarks/far_images.py, beside this script
from report import cpu_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
CANDIDATES = [("msp", {}), ("energy", {}), ("knn", {"k": 1}), ("knn", {"k": 5}), ("knn", {"k": 10}),
              ("mahalanobis", {"shrinkage": 0.1}), ("mahalanobis", {"shrinkage": 0.5})]


def spec_for(root: Path, name: str, finetune: bool) -> dict:
    train = {"strategy": "head_only", "epochs": 10, "label_smoothing": 0.1,
             "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001}, "scheduler": "cosine", "seed": 0}
    if finetune:
        train.update(strategy={"name": "partial", "options": {"groups": 2}}, epochs=3, backbone_lr_mult=0.5)
    return {"name": name, "backbone": "efficientnet_lite0",
            "data": {"reader": {"name": "imagefolder", "options": {"root": str(root), "train": "train",
                                                                   "val_split": 0.2, "test": "test"}},
                     "batch_size": 32, "augment": "none"},
            "train": train, "report": {"enabled": False}}


def link_split(data: Path, classes: list[str], target: Path) -> None:
    for split in ("train", "test"):
        for name in classes:
            folder = target / split / name
            folder.mkdir(parents=True)
            for image in sorted((data / split / name).iterdir()):
                (folder / image.name).symlink_to(image)


# --- scoring -------------------------------------------------------------------------------------------

def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(score of an unknown > score of a known), ties counted half (Mann-Whitney)."""
    scores = np.concatenate([known, unknown])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    unknown_ranks = ranks[len(known):].sum()
    return float((unknown_ranks - len(unknown) * (len(unknown) + 1) / 2) / (len(known) * len(unknown)))


FROZEN_FEATURES: dict[str, torch.Tensor] = {}  # path -> pooled features of the frozen pretrained lite0


def pass_over(loaded, items, frozen: bool = False):
    """(features, logits, labels) of `items` from the run's model in its precision path. `frozen`: the run
    trained the head alone, so the features are the pretrained backbone's, the same in every split: computed
    once per image in this process, the head applied to them (as tlzoo's cached passes do)."""
    from tlzoo.data.batches import SourceSetup, eval_source
    from tlzoo.data.transforms import build_eval_transform
    from tlzoo.engine.pooled_pass import features_over

    missing = [(p, y) for p, y in items if str(p) not in FROZEN_FEATURES] if frozen else items
    if missing:
        source = eval_source(SourceSetup(missing, build_eval_transform(loaded.data_config), loaded.batch_size, 0, 0,
                                         shuffle=False, background=loaded.background))
        features, logits, labels = features_over(loaded.model, source, loaded.device, loaded.precision,
                                                 fast=loaded.fast, log=lambda line: None)
        if not frozen:
            return features, logits, labels
        FROZEN_FEATURES.update({str(p): f for (p, _), f in zip(missing, features)})
    features = torch.stack([FROZEN_FEATURES[str(p)] for p, _ in items])
    with torch.inference_mode():
        logits = loaded.model.head(features.to(loaded.device)).float().cpu()
    return features, logits, torch.tensor([y for _, y in items])


def evaluate_split(run_dir: Path, near: list[Path], far: list[Path], frozen: bool) -> dict:
    """Per candidate: AUROC, FPR95 and the share accepted at the validation threshold, near and far."""
    from tlzoo.data.labelled import load_labelled
    from tlzoo.engine.inference import load_run
    from tlzoo.registry import get_registry
    from tlzoo.rundir import outputs
    from tlzoo.spec import resolve_spec
    from tlzoo.trust.options import METHOD_OPTIONS
    from tlzoo.trust.scores import build_scorer, fit_tensors, unit_rows
    from tlzoo.trust.threshold import kept_share, score_table, threshold_for

    registry = get_registry()
    loaded = load_run(run_dir, registry)
    raw = outputs.read_json(run_dir / outputs.SPEC_FILE, "spec")
    data = load_labelled(resolve_spec(raw, registry, Path(loaded.sidecar["spec_dir"]), "spec"))
    train_f, _, train_y = pass_over(loaded, data.train, frozen)
    val_f, val_z, _ = pass_over(loaded, data.val, frozen)
    test_f, test_z, _ = pass_over(loaded, data.test, frozen)
    near_f, near_z, _ = pass_over(loaded, [(p, 0) for p in near], frozen)
    far_f, far_z, _ = pass_over(loaded, [(p, 0) for p in far], frozen)
    temperature = loaded.trust.temperature if loaded.trust is not None else 1.0
    rows = {}
    for method, options in CANDIDATES:
        parsed = METHOD_OPTIONS[method].model_validate(options)
        tensors = fit_tensors(method, parsed, train_f, train_y, len(loaded.classes))
        scorer = build_scorer(method, parsed.model_dump(), temperature, tensors)
        with torch.inference_mode():
            val, test, near_s, far_s = (scorer(f, z).double().numpy() for f, z in
                                        ((val_f, val_z), (test_f, test_z), (near_f, near_z), (far_f, far_z)))
        threshold = threshold_for(0.95, score_table(torch.from_numpy(val)))
        oracle = np.quantile(test, 0.95, method="higher")
        name = method + "".join(f" {k}={v}" for k, v in options.items())
        rows[name] = {"test_kept": kept_share(torch.from_numpy(test), threshold)}
        for kind, scores in (("near", near_s), ("far", far_s)):
            rows[name][kind] = {"auroc": auroc(test, scores), "fpr95": float((scores <= oracle).mean()),
                                "accepted": float((scores <= threshold).mean())}
        if method == "knn" and options.get("k") == 1:  # what storing the bank in fp16 costs
            exact = build_scorer("knn", parsed.model_dump(), temperature, {"bank": unit_rows(train_f)})
            with torch.inference_mode():
                pairs = [(scorer(f, z), exact(f, z)) for f, z in ((test_f, test_z), (near_f, near_z), (far_f, far_z))]
            rows[name]["fp16"] = {
                "max_abs_diff": max(float((a - b).abs().max()) for a, b in pairs),
                "decisions_agree": float(np.mean(np.concatenate([((a > threshold) == (b > threshold)).numpy()
                                                                  for a, b in pairs])))}
    return rows


def train_run(spec: dict, output: Path) -> tuple[Path, dict, float]:
    import tlzoo

    started = time.perf_counter()
    result = tlzoo.run(spec, output=output / f"{spec['name']}-{time.time_ns()}")
    return result.run_dir, result.summary, time.perf_counter() - started


def append(text: str) -> None:
    print(text, end="", flush=True)
    with RESULTS.open("a") as results:
        results.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets" / "flowers12")
    parser.add_argument("--splits", type=int, default=3, help="class splits (8 known, 4 unknown) to measure")
    parser.add_argument("--far", type=int, default=210, help="far-unknown images to generate")
    parser.add_argument("--finetune", action="store_true", help="also a partial fine-tune run on the first split")
    parser.add_argument("--dry", action="store_true", help="print, do not append to RESULTS.md")
    args = parser.parse_args()
    data = args.data.resolve()
    work = Path(tempfile.mkdtemp(prefix="tlzoo-trust-"))
    load_before = os.getloadavg()
    started = time.perf_counter()
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    far = far_images(work / "far", args.far)
    order = random.Random(0)
    splits = [classes[8:]] + [sorted(order.sample(classes, 4)) for _ in range(args.splits - 1)]
    runs = [(index, held_out, False) for index, held_out in enumerate(splits)]
    if args.finetune:
        runs.append((0, splits[0], True))
    results, summaries = [], []
    for index, held_out, finetune in runs:
        known = [c for c in classes if c not in held_out]
        root = work / f"split{index}"
        if not root.exists():
            link_split(data, known, root)
        near = sorted(p for c in held_out for split in ("train", "test") for p in (data / split / c).iterdir())
        run_dir, summary, wall = train_run(spec_for(root, f"trust-split{index}" + ("-ft" if finetune else ""),
                                                    finetune), work / "runs")
        rows = evaluate_split(run_dir, near, far, frozen=not finetune)
        rows["_counts"] = {"train": summary["num_train"], "val": summary["num_val"],
                           "test": summary["test"]["count"], "near": len(near)}
        results.append((index, held_out, finetune, rows))
        summaries.append((index, finetune, summary, wall))
        print(f"split {index} ({', '.join(held_out)} unknown){' fine-tuned' if finetune else ''}: done", file=sys.stderr)
    text = markdown(results, summaries, load_before, time.perf_counter() - started, len(far))
    if args.dry:
        print(text)
    else:
        append(text)
        print(f"appended to {RESULTS}", file=sys.stderr)


def features_note(cost: dict) -> str:
    found = cost.get("train_features")
    return "-" if not found else f"{found['images']} images, {found['from']}, {found['seconds']:.1f} s"


def markdown(results, summaries, load_before, seconds: float, far_count: int) -> str:
    from tlzoo.runtime.precision import resolve_precision

    precision = f"precision auto = {resolve_precision('auto', torch.device('cpu'))} on this CPU" + (
        f" (TLZOO_CPU_BF16={os.environ['TLZOO_CPU_BF16']})" if "TLZOO_CPU_BF16" in os.environ else "")
    head = [r for r in results if not r[2]]
    counts = head[0][3]["_counts"]
    names = [name for name in head[0][3] if not name.startswith("_")]
    out = [f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: unknown-image scores and calibration "
           f"(benchmarks/trust_bench.py)\n\n",
           f"{cpu_model()}; {os.cpu_count()} cores; torch {torch.__version__}; {precision}; load average before "
           f"{', '.join(f'{v:.2f}' for v in load_before)}, after {', '.join(f'{v:.2f}' for v in os.getloadavg())} "
           f"(a shared machine: wall times are stretched, the scores are not). Benchmark {seconds / 60:.1f} min.\n\n",
           "Runs: lite0 head only, AdamW 3e-3, cosine, label smoothing 0.1, 10 epochs, no augmentation, on 8 "
           f"flowers12 classes (train folder, val_split 0.2: {counts['train']} train / {counts['val']} val; their "
           f"test folder, {counts['test']} images, held out). Near unknown: all {counts['near']} images of the 4 "
           f"other classes; far unknown: {far_count} generated "
           "images (noise, gradients, stripes, shapes, rendered documents and screenshots, skimage photographs). "
           "Splits (held-out classes): " + "; ".join(f"{i}: {', '.join(h)}" for i, h, ft, _ in head) + ".\n\n",
           "Mean over the splits. AUROC: known test against unknown (1 is perfect, 0.5 chance). FPR95: share of "
           "unknowns accepted when 95 % of the known test images are kept. At val threshold: unknowns accepted "
           "at the threshold chosen on the validation split for keep 0.95 (tlzoo's rule), and the share of "
           "known test images it keeps.\n\n",
           "| score | near AUROC | near FPR95 | far AUROC | far FPR95 | near accepted at val thr. | far accepted "
           "at val thr. | known test kept | worst split near / far AUROC |\n",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|\n"]
    for name in names:
        per = [rows[name] for _, _, _, rows in head]
        mean = lambda kind, key: statistics.fmean(r[kind][key] for r in per)  # noqa: E731
        worst = f"{min(r['near']['auroc'] for r in per):.3f} / {min(r['far']['auroc'] for r in per):.3f}"
        out.append(f"| {name} | {mean('near', 'auroc'):.3f} | {mean('near', 'fpr95'):.3f} | "
                   f"{mean('far', 'auroc'):.3f} | {mean('far', 'fpr95'):.3f} | {mean('near', 'accepted'):.3f} | "
                   f"{mean('far', 'accepted'):.3f} | {statistics.fmean(r['test_kept'] for r in per):.3f} | "
                   f"{worst} |\n")
    for index, held_out, finetune, rows in results:
        if finetune:
            out.append(f"\nPartial fine-tune (top 2 groups + head, 3 epochs, backbone_lr_mult 0.5) on split "
                       f"{index}:\n\n| score | near AUROC | near FPR95 | far AUROC | far FPR95 |\n|---|---:|---:|---:|---:|\n")
            for name in names:
                r = rows[name]
                out.append(f"| {name} | {r['near']['auroc']:.3f} | {r['near']['fpr95']:.3f} | {r['far']['auroc']:.3f} "
                           f"| {r['far']['fpr95']:.3f} |\n")
    fp16 = [rows[name]["fp16"] for _, _, _, rows in results for name in rows if "fp16" in rows[name]]
    out.append("\nPer split (near AUROC / far AUROC):\n\n| score | " + " | ".join(
        f"split {i}" for i, _, _, _ in head) + " |\n|---|" + "---:|" * len(head) + "\n")
    for name in names:
        out.append(f"| {name} | " + " | ".join(f"{rows[name]['near']['auroc']:.3f} / {rows[name]['far']['auroc']:.3f}"
                                           for _, _, _, rows in head) + " |\n")
    if fp16:
        out.append(f"\nkNN bank in fp16 instead of fp32 (k=1, all scored images of every run): max |score diff| "
                   f"{max(f['max_abs_diff'] for f in fp16):.2e}, unknown decisions agree on "
                   f"{min(f['decisions_agree'] for f in fp16):.4f} (worst run).\n")
    out.append("\nCalibration (temperature fitted on val, figures on the held-out test split) and the cost of "
               "fitting after training:\n\n| run | T | test ECE before / after | NLL before / after | Brier before / "
               "after | val kept | test kept | trust fit s | train features |\n|---|---:|---|---|---|---:|---:|---:|---|\n")
    for index, finetune, summary, wall in summaries:
        trust = summary["trust"]
        cal, unknown, cost = trust["calibration"], trust.get("unknown") or {}, trust["cost"]
        test = cal["test"]
        out.append(f"| split {index}{' fine-tune' if finetune else ''} | {cal['temperature']:.3f} | "
                   f"{test['before']['ece']:.4f} / {test['after']['ece']:.4f} | {test['before']['nll']:.4f} / "
                   f"{test['after']['nll']:.4f} | {test['before']['brier']:.4f} / {test['after']['brier']:.4f} | "
                   f"{unknown.get('val_kept', float('nan')):.3f} | {unknown.get('test_kept', float('nan')):.3f} | "
                   f"{cost['seconds']:.1f} (run {wall:.0f}) | {features_note(cost)} |\n")
    return "".join(out)


if __name__ == "__main__":
    main()
