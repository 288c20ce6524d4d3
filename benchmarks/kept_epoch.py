"""Which epoch should a head-only run keep? Test top-1 of each rule, on the auto bench's held-out data sets.

A head-only run trains a linear layer on frozen pooled features; the engine keeps
one epoch's weights (`train.monitor`). On a few dozen validation images the
choice is noisy. For every data set of auto_train_bench.py already made under
--work, every EfficientNet-Lite backbone and every head setting below, this
trains SEEDS heads side by side as the head sweep of `tlzoo train` does (the
engine's AdamW, cosine schedule per step, label smoothing 0.1, batches of 32)
and scores, on the test split, the epoch
each rule keeps:

- first best top-1: the first epoch of highest validation top-1 (the engine's default, `monitor: val_top1`);
- lowest loss: the first epoch of lowest validation loss (`monitor: val_loss`);
- last: the last epoch;
- 5-seed average: the weights of 5 seeds averaged, at their averaged head's lowest-loss epoch.

    python benchmarks/kept_epoch.py --work /tmp/tlzoo-auto-bench [--no-append]

The features come through the activation cache (TLZOO_CACHE_DIR) as a run's would.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tlzoo.data.labelled import labelled_from
from tlzoo.engine.features import pooled_features
from tlzoo.engine.linear_head import stacked_heads
from tlzoo.registry import get_registry
from tlzoo.spec import resolve_spec

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "examples" / "flowers12.json"
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
SETTINGS = ((3e-3, 10), (1e-2, 40), (3e-3, 20), (1e-3, 40), (1e-2, 10))  # (lr, epochs); the demo's first
SEEDS = 10
RULES = ("first best top-1", "lowest loss", "last", "5-seed average")


def features_of(data_dir: Path, backbone: str):
    spec = json.loads(DEMO.read_text())
    spec["data"]["reader"] = {"name": "imagefolder", "options": {"root": str(data_dir), "train": "train",
                                                                  "val": "val", "test": "test"}}
    spec["backbone"]["name"] = backbone
    resolved = resolve_spec(spec, get_registry(), Path.cwd(), "kept_epoch")
    return pooled_features(resolved, labelled_from(resolved.reader.build(Path.cwd())), lambda _: None,
                           with_test=True)


def trajectories(f, lr: float, epochs: int, seed: int = 0) -> list[dict]:
    """Per epoch: each seed's validation images right and loss, its test images right; the 5-seed average's."""
    train_x, val_x, test_x = f.train_x.float(), f.val_x.float(), f.test_x.float()
    out = []
    for weight, bias in stacked_heads(train_x, f.train_y, f.num_classes, lr, epochs, seed, label_smoothing=0.1,
                                      weight_decay=1e-4, batch_size=32, repeats=SEEDS):
        with torch.no_grad():
            val = torch.baddbmm(bias, val_x.expand(SEEDS, *val_x.shape), weight)
            test = torch.baddbmm(bias, test_x.expand(SEEDS, *test_x.shape), weight)
            mean_w, mean_b = weight[:5].mean(0), bias[:5].mean(0)
            out.append({
                "val": (val.argmax(2) == f.val_y).sum(1).tolist(),
                "loss": F.cross_entropy(val.transpose(1, 2), f.val_y.expand(SEEDS, -1), reduction="none")
                .mean(1).tolist(),
                "test": (test.argmax(2) == f.test_y).sum(1).tolist(),
                "avg_loss": float(F.cross_entropy(val_x @ mean_w + mean_b, f.val_y)),
                "avg_test": int(((test_x @ mean_w + mean_b).argmax(1) == f.test_y).sum()),
            })
    return out


def scores(trajectory: list[dict], tests: int) -> dict[str, float]:
    """Test top-1 of the epoch each rule keeps, averaged over the seeds (the average: one model)."""
    kept = {rule: [] for rule in RULES[:3]}
    for seed in range(SEEDS):
        val = [epoch["val"][seed] for epoch in trajectory]
        loss = [epoch["loss"][seed] for epoch in trajectory]
        test = [epoch["test"][seed] for epoch in trajectory]
        kept["first best top-1"].append(test[val.index(max(val))])
        kept["lowest loss"].append(test[loss.index(min(loss))])
        kept["last"].append(test[-1])
    result = {rule: statistics.mean(values) / tests for rule, values in kept.items()}
    averaged = [epoch["avg_loss"] for epoch in trajectory]
    result["5-seed average"] = trajectory[averaged.index(min(averaged))]["avg_test"] / tests
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tlzoo-auto-bench"))
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.monotonic()
    sets = sorted(path for path in (args.work / "data").iterdir() if (path / "test").is_dir())
    grid: dict[tuple[float, int], list[dict[str, float]]] = {setting: [] for setting in SETTINGS}
    for data_dir in sets:
        for backbone in BACKBONES:
            f = features_of(data_dir, backbone)
            for setting in SETTINGS:
                grid[setting].append(scores(trajectories(f, *setting), int(f.test_y.numel())))
            print(f"{data_dir.name} {backbone}", flush=True)
    text = io.StringIO()
    text.write(f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: which epoch a head-only run keeps "
               "(benchmarks/kept_epoch.py)\n\n")
    text.write(f"{cpu_name()}, {os.cpu_count()} cores; {len(sets)} data sets of "
               f"auto_train_bench.py ({', '.join(path.name for path in sets)}) x {len(BACKBONES)} backbones; "
               f"{SEEDS} seeds a cell; mean test top-1 of the epoch each rule keeps; took "
               f"{(time.monotonic() - started) / 60:.0f} min.\n\n")
    text.write("| lr, epochs | " + " | ".join(RULES) + " | lowest loss above first best top-1 |\n")
    text.write("|---|" + "---:|" * (len(RULES) + 1) + "\n")
    for (lr, epochs), cells in grid.items():
        means = {rule: statistics.mean(cell[rule] for cell in cells) for rule in RULES}
        above = sum(cell["lowest loss"] > cell["first best top-1"] for cell in cells)
        below = sum(cell["lowest loss"] < cell["first best top-1"] for cell in cells)
        text.write(f"| {lr:g}, {epochs} | " + " | ".join(f"{means[rule]:.4f}" for rule in RULES)
                   + f" | {above} above, {below} below of {len(cells)} |\n")
    print(text.getvalue())
    if not args.no_append:
        with (HERE / "RESULTS.md").open("a") as handle:
            handle.write(text.getvalue())


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
