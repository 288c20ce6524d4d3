"""Phone photos against 224-pixel images of the same pictures (issue 23); appends a section to RESULTS.md.

    .venv/bin/python benchmarks/photos_bench.py [--data ../shared/datasets/flowers12]
        [--train-per-class 30] [--test-per-class 10] [--repeats 2]

Makes, in a temporary folder that is removed afterwards, two copies of a
flowers12 subset: every image upscaled (bicubic) to 4032x3024, a 12 Mpx phone
photo, and the same picture at 299x224 (shorter side 224, like flowers12), both
JPEG quality 90. The same geometry in both, so that they differ only in pixel
count. Then, alternating the two, `tlzoo run` of the demo recipe
(examples/flowers12.json: head only on frozen EfficientNet-Lite0, 10 epochs, a
fresh cache folder each) and `tlzoo predict` on the test images and on one
image. Also per-image decode costs (the scan, the old full decode against the
reduced one, Pillow against torchvision.io.decode_jpeg), the pixel difference
and the predictions of the reduced decode against the full one, and what
predict's start-up spends importing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
TLZOO = [sys.executable, "-m", "tlzoo"]
PHONE = (4032, 3024)
SMALL = (299, 224)
sys.path.insert(0, str(HERE))

from report import cpu_line, load_line  # noqa: E402


def convert(job: tuple[Path, Path, Path]) -> None:
    from PIL import Image

    source, large, small = job
    with Image.open(source) as opened:
        picture = opened.convert("RGB")
    picture.resize(PHONE, Image.Resampling.BICUBIC).save(large, quality=90)
    picture.resize(SMALL, Image.Resampling.BICUBIC).save(small, quality=90)


def make_sets(data: Path, work: Path, per_split: dict[str, int]) -> tuple[Path, Path]:
    jobs = []
    for split, count in per_split.items():
        for class_dir in sorted(p for p in (data / split).iterdir() if p.is_dir()):
            for source in sorted(class_dir.glob("*.jpg"))[:count]:
                pair = []
                for name in ("large", "small"):
                    target = work / name / split / class_dir.name / source.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    pair.append(target)
                jobs.append((source, *pair))
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(convert, jobs, chunksize=8))
    return work / "large", work / "small"


def write_spec(root: Path, work: Path, name: str) -> Path:
    spec = json.loads((REPO / "examples" / "flowers12.json").read_text())
    spec["name"] = name
    spec["data"]["reader"]["options"]["root"] = str(root)
    spec["output"] = str(work / "runs")
    spec["cache"] = {"dir": str(work / f"cache-{name}-{time.time_ns()}")}  # cold every time
    path = work / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def timed(command: list[str]) -> tuple[float, str, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout, done.stderr


def train(root: Path, work: Path, name: str) -> dict:
    spec = write_spec(root, work, name)
    out = work / "runs" / f"{name}-{time.time_ns()}"
    load = os.getloadavg()[0]
    seconds, _, log = timed(TLZOO + ["run", str(spec), "--output", str(out)])
    best = json.loads((out / "summary.json").read_text())["best"]
    # "cache: stage-9 activations of 360 train images x 1 view(s) computed in 21.3s": decoding happens there
    builds = [float(line.rsplit(" in ", 1)[1].split("s")[0]) for line in log.splitlines()
              if line.startswith("cache: stage-") and " computed in " in line]
    return {"wall": seconds, "top1": best["val_top1"], "run_dir": out, "load": load, "build": sum(builds)}


def predict(run_dir: Path, inputs: list[Path]) -> dict:
    load = os.getloadavg()[0]
    seconds, out, _ = timed(TLZOO + ["predict", str(run_dir), *map(str, inputs), "--top-k", "1", "--format", "csv"])
    rows = [row for row in csv.DictReader(io.StringIO(out)) if row["rank"] == "1"]
    correct = sum(Path(row["path"]).parent.name == row["class"] for row in rows)
    return {"wall": seconds, "images": len(rows), "correct": correct, "load": load}


def test_files(root: Path) -> list[Path]:
    return sorted((root / "test").rglob("*.jpg"))


def per_image_ms(function, files: list[Path], rounds: int = 2) -> float:
    function(files[0])
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for path in files:
            function(path)
        best = min(best, (time.perf_counter() - started) / len(files) * 1000)
    return best


def decode_costs(large: list[Path], small: list[Path]) -> list[tuple[str, float, float]]:
    """(what, ms per 12 Mpx image, ms per 224-pixel image), single-threaded."""
    import torch
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    from tlzoo.data.images import decode_rgb, load_rgb
    from tlzoo.data.scan import check_image
    from tlzoo.data.transforms import build_eval_transform
    from tlzoo.model.backbone import DataConfig

    torch.set_num_threads(1)
    pipeline = build_eval_transform(DataConfig(input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic"))
    need = pipeline.decode_need()

    def torchvision_decode(path):
        pixels = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)
        return pipeline.image_part(Image.fromarray(pixels.permute(1, 2, 0).numpy()))

    cases = [
        ("scan: check_image (before: a full decode; now 1/8 scale and the hashes)", check_image),
        ("scan as before: full decode", lambda p: decode_rgb(p)),
        ("decode + resize + crop, full decode (before)", lambda p: pipeline.image_part(load_rgb(p))),
        ("decode + resize + crop, reduced decode (now)", lambda p: pipeline.image_part(load_rgb(p, need=need))),
        ("torchvision.io.decode_jpeg (full) + resize + crop", torchvision_decode),
    ]
    return [(what, per_image_ms(function, large), per_image_ms(function, small, rounds=3))
            for what, function in cases]


def pixel_difference(files: list[Path]) -> dict:
    """Resized and cropped uint8 pixels of the reduced decode against the full decode."""
    import numpy as np

    from tlzoo.data.images import load_rgb
    from tlzoo.data.transforms import build_eval_transform
    from tlzoo.model.backbone import DataConfig

    pipeline = build_eval_transform(DataConfig(input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic"))
    gaps = []
    for path in files:
        full = np.asarray(pipeline.image_part(load_rgb(path)), dtype=np.int16)
        reduced = np.asarray(pipeline.image_part(load_rgb(path, need=pipeline.decode_need())), dtype=np.int16)
        gaps.append(np.abs(full - reduced))
    gaps = np.stack(gaps)
    return {"mean": float(gaps.mean()), "p99": float(np.percentile(gaps, 99)), "max": int(gaps.max()),
            "images": len(files)}


def reduced_against_full(run_dir: Path, files: list[Path]) -> dict:
    """The large run's model on the test photos, decoded reduced (as predict does) and at full size."""
    from unittest import mock

    from tlzoo.data.transforms import Pipeline
    from tlzoo.engine.inference import load_run, predict as predict_images
    from tlzoo.registry import get_registry

    loaded = load_run(run_dir, get_registry())
    reduced = predict_images(loaded, files, top_k=1, log=lambda line: None)
    with mock.patch.object(Pipeline, "decode_need", lambda self: None):
        full = predict_images(loaded, files, top_k=1, log=lambda line: None)

    def correct(results):
        return sum(r.path.parent.name == r.top[0][0] for r in results)

    return {"reduced": correct(reduced), "full": correct(full), "images": len(files),
            "disagree": sum(a.top[0][0] != b.top[0][0] for a, b in zip(reduced, full)),
            "max_prob_gap": max(abs(a.top[0][1] - b.top[0][1]) for a, b in zip(reduced, full))}


def import_seconds(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    return time.perf_counter() - started


def startup(run_dir: Path, image: Path, repeats: int) -> dict:
    """Wall of `tlzoo predict RUN_DIR IMAGE`, of importing what it imports, and the -X importtime tops."""
    predict_walls = [timed(TLZOO + ["predict", str(run_dir), str(image)])[0] for _ in range(repeats)]
    torch_walls = [import_seconds("import torch") for _ in range(repeats)]
    stack_walls = [import_seconds("import torch, timm, tlzoo.cli.main, tlzoo.engine.inference") for _ in range(repeats)]
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "tlzoo", "predict", str(run_dir), str(image)],
                          capture_output=True, text=True, cwd=REPO)
    cumulative: dict[str, int] = {}
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, total, name = line.split("|")
            if name.strip() in ("torch", "timm", "torchvision", "torch._dynamo", "huggingface_hub", "numpy",
                                "PIL.Image", "typer", "pydantic", "tlzoo.cli.main", "tlzoo.engine.inference"):
                cumulative[name.strip()] = max(cumulative.get(name.strip(), 0), int(total))
    return {"predict": predict_walls, "torch": torch_walls, "stack": stack_walls,
            "importtime_ms": {k: v / 1000 for k, v in sorted(cumulative.items(), key=lambda kv: -kv[1])}}


def median(values: list[float]) -> float:
    return statistics.median(values)


def joined(rows: list[dict], key: str, form: str = ".1f") -> str:
    return ", ".join(format(row[key], form) for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "datasets" / "flowers12")
    parser.add_argument("--train-per-class", type=int, default=30)
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each size, alternating")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    began, load_before = time.perf_counter(), load_line()
    work = Path(tempfile.mkdtemp(prefix="tlzoo-photos-"))
    try:
        started = time.perf_counter()
        large, small = make_sets(args.data.resolve(), work,
                                 {"train": args.train_per_class, "test": args.test_per_class})
        made = time.perf_counter() - started
        large_test, small_test = test_files(large), test_files(small)
        megabytes = sum(p.stat().st_size for p in large.rglob("*.jpg")) / 2**20
        count = len(list(large.rglob("*.jpg")))
        print(f"made {count} photos of {PHONE[0]}x{PHONE[1]} ({megabytes:.0f} MiB) and their {SMALL[0]}x{SMALL[1]} "
              f"copies in {made:.0f}s", flush=True)
        runs = {"large": [], "small": []}
        for repeat in range(args.repeats):
            for name, root in (("small", small), ("large", large)) if repeat % 2 == 0 else \
                    (("large", large), ("small", small)):
                runs[name].append(train(root, work, name))
                print(f"run {name}: {runs[name][-1]['wall']:.1f}s top-1 {runs[name][-1]['top1']:.4f} "
                      f"(load {runs[name][-1]['load']:.2f})", flush=True)
        predicts = {"large": [], "small": []}
        for repeat in range(args.repeats):
            for name, files in (("small", small_test), ("large", large_test)):
                predicts[name].append(predict(runs[name][0]["run_dir"], files))
                print(f"predict {name}: {predicts[name][-1]}", flush=True)
        costs = decode_costs(large_test[:12], small_test[:12])
        pixels = pixel_difference(large_test)
        agreement = reduced_against_full(runs["large"][0]["run_dir"], large_test)
        starts = {name: startup(runs[name][0]["run_dir"], files[0], 3)
                  for name, files in (("small", small_test), ("large", large_test))}
        seconds = time.perf_counter() - began
        text = markdown(args, count, megabytes, made, runs, predicts, costs, pixels, agreement, starts, seconds,
                        load_before)
        print(text)
        if not args.no_write:
            with open(RESULTS, "a") as handle:
                handle.write(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(args, count, megabytes, made, runs, predicts, costs, pixels, agreement, starts, seconds,
             load_before) -> str:
    import datetime

    test_images = predicts["large"][0]["images"]
    lines = [f"\n## {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: phone photos against 224-pixel "
             "images (benchmarks/photos_bench.py)\n", cpu_line() + "\n",
             f"{count} flowers12 images ({args.train_per_class} train and {args.test_per_class} test a class) as "
             f"{PHONE[0]}x{PHONE[1]} JPEGs ({megabytes:.0f} MiB, made in {made:.0f} s) and as {SMALL[0]}x{SMALL[1]} "
             f"JPEGs of the same pictures; the demo recipe, cold cache, {args.repeats} runs of each size "
             f"alternating. Benchmark wall time {seconds / 60:.1f} min. Load before: {load_before}; after: "
             f"{load_line()} (on 2 cores; other engineers' work shared the machine).\n",
             "| run | wall s (each) | median | test top-1 | load at start |", "|---|---|---:|---:|---|"]
    builds = {name: joined(rows, "build") for name, rows in runs.items()}
    for name, label in (("small", "demo recipe, 224-pixel images"), ("large", "demo recipe, 12 Mpx photos")):
        rows = runs[name]
        lines.append(f"| {label} | {joined(rows, 'wall')} | {median([r['wall'] for r in rows]):.1f} | "
                     f"{joined(rows, 'top1', '.4f')} | {joined(rows, 'load', '.2f')} |")
    for name, label in (("small", "predict test images, 224 px"), ("large", "predict test images, 12 Mpx")):
        rows = predicts[name]
        lines.append(f"| {label} ({test_images} images) | {joined(rows, 'wall')} | "
                     f"{median([r['wall'] for r in rows]):.1f} | {rows[0]['correct'] / rows[0]['images']:.4f} | "
                     f"{joined(rows, 'load', '.2f')} |")
    run_ratio = median([r["wall"] for r in runs["large"]]) / median([r["wall"] for r in runs["small"]])
    run_gap = abs(runs["large"][0]["top1"] - runs["small"][0]["top1"]) * test_images
    predict_ratio = median([r["wall"] for r in predicts["large"]]) / median([r["wall"] for r in predicts["small"]])
    predict_gap = abs(predicts["large"][0]["correct"] - predicts["small"][0]["correct"])
    one = starts["large"]
    lines += ["", "| target | result | figures |", "|---|---|---|",
              f"| 12 Mpx run within 1.5x the 224-pixel run's wall time | {'PASS' if run_ratio <= 1.5 else 'FAIL'} | "
              f"{run_ratio:.2f}x (medians) |",
              f"| its test top-1 equal within one image | {'PASS' if run_gap <= 1 + 1e-9 else 'FAIL'} | "
              f"{run_gap:.0f} image(s) apart of {test_images} |",
              f"| predict on 12 Mpx within 1.5x of 224 px | {'PASS' if predict_ratio <= 1.5 else 'FAIL'} | "
              f"{predict_ratio:.2f}x (medians, process start included) |",
              f"| predict top-1 equal within one image | {'PASS' if predict_gap <= 1 else 'FAIL'} | "
              f"{predict_gap} image(s) apart |",
              f"| `tlzoo predict` of one 12 Mpx photo under 2 s | {'PASS' if min(one['predict']) < 2 else 'FAIL'} | "
              f"{', '.join(f'{s:.2f}' for s in one['predict'])} s; importing torch alone "
              f"{', '.join(f'{s:.2f}' for s in one['torch'])} s |",
              "", "Per-image decode cost, one thread, ms (best of 2 passes over 12 test images):", "",
              "| step | 12 Mpx JPEG | 224-pixel JPEG |", "|---|---:|---:|"]
    lines += [f"| {what} | {large:.1f} | {small:.2f} |" for what, large, small in costs]
    lines += ["", f"- Frozen-pass cache builds (train + val: each image resized and passed once, decoded there unless "
              "the run's scan kept it, tlzoo.data.decoded_once), s: "
              f"224 px {builds['small']}; 12 Mpx {builds['large']}.",
              f"- Reduced decode against the full decode, after the eval resize and crop to 224 (uint8, "
              f"{pixels['images']} test photos): mean |difference| {pixels['mean']:.3f} levels, 99th percentile "
              f"{pixels['p99']:.0f}, max {pixels['max']}. The 12 Mpx run's model on them: top-1 "
              f"{agreement['reduced']}/{agreement['images']} reduced, {agreement['full']}/{agreement['images']} full; "
              f"{agreement['disagree']} prediction(s) differ; largest top-1 probability gap "
              f"{agreement['max_prob_gap']:.4f}.",
              f"- `tlzoo predict RUN_DIR ONE_IMAGE` wall (3 each): 12 Mpx {', '.join(f'{s:.2f}' for s in one['predict'])} s, "
              f"224 px {', '.join(f'{s:.2f}' for s in starts['small']['predict'])} s; `import torch` alone "
              f"{', '.join(f'{s:.2f}' for s in one['torch'])} s; `import torch, timm, tlzoo.cli.main, "
              f"tlzoo.engine.inference` {', '.join(f'{s:.2f}' for s in one['stack'])} s. "
              "-X importtime of the predict command, cumulative ms: "
              + ", ".join(f"{k} {v:.0f}" for k, v in one["importtime_ms"].items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
