"""`tlzoo inspect` on corrupted copies of flowers12; appends a section to RESULTS.md.

Each variant copies flowers12 into a temporary folder (never into the repository),
inspects the clean copy (its leaks are the false-alarm candidates), then corrupts
it and inspects again:
- 5 % of the training images (36) moved into another class's folder, seeded: flipped labels;
- 10 test images copied into their class's training folder, resized to 70 % and re-encoded
  as JPEG quality 75: planted leaks;
- 5 synthetic images (text screenshot, checkerboard, grey, noise, gradient) put into
  training classes: planted outliers.
Measured: the share of flipped labels among the top 2 x 36 training suspects (target
>= 70 %), planted leaks found (target >= 9 of 10), planted outliers found, and the
cross-split pairs reported on the clean copy. Variants check that the cuts are not
tuned to one case: another seed and a random re-split, the images at 112 px, and
another backbone (efficientnet_lite2). `--sheets DIR` writes a PNG of every
cross-split pair reported on each clean copy, to look at.

    .venv/bin/python benchmarks/inspect_bench.py [--data ../shared/datasets/flowers12] [--sheets DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from report import cpu_line, load_line  # benchmarks/report.py, beside this script

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
TLZOO = Path(sys.executable).parent / "tlzoo"
FLIP_SHARE = 0.05
PLANTED_COPIES = 10
COPY_SCALE = 0.7
COPY_QUALITY = 75


@dataclass
class Variant:
    name: str
    seed: int
    resplit: bool = False  # train and test pooled and dealt again, 60 / 20 a class
    side: int | None = None  # every image resized to side x side first
    backbone: str = "efficientnet_lite0"


VARIANTS = [
    Variant("flowers12 as shipped, seed 0", 0),
    Variant("random re-split, seed 1", 1, resplit=True),
    Variant("images at 112 px, seed 2", 2, side=112),
    Variant("efficientnet_lite2 (260 px input), seed 0", 0, backbone="efficientnet_lite2"),
]


def images_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def clean_copy(data: Path, variant: Variant, into: Path) -> Path:
    """flowers12 as the variant wants it, in `into` (the original folder itself when it asks for no change)."""
    if not variant.resplit and variant.side is None:
        return data
    rng = random.Random(variant.seed)
    for class_dir in sorted((data / "train").iterdir()):
        files = images_of(class_dir) + images_of(data / "test" / class_dir.name)
        if variant.resplit:
            rng.shuffle(files)
        test_count = len(images_of(data / "test" / class_dir.name))
        for index, path in enumerate(files):
            split = "test" if index >= len(files) - test_count else "train"
            target = into / split / class_dir.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if variant.side is None:
                shutil.copy2(path, target)
            else:
                with Image.open(path) as image:
                    image.convert("RGB").resize((variant.side, variant.side), Image.Resampling.LANCZOS).save(
                        target, quality=90)
    return into


def synthetic_outliers(side: int, seed: int) -> dict[str, Image.Image]:
    rng = np.random.default_rng(seed)
    shot = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(shot)
    for y in range(6, side - 10, 14):
        draw.text((6, y), f"File  Edit  View  results {y * 37 % 1000}", fill="black")
    ramp = np.tile(np.linspace(0, 255, side, dtype=np.uint8), (side, 1))
    return {
        "screenshot": shot,
        "checkerboard": Image.fromarray((np.indices((side, side)).sum(0) // max(1, side // 8) % 2 * 255)
                                        .astype(np.uint8)).convert("RGB"),
        "grey": Image.new("RGB", (side, side), (128, 128, 128)),
        "noise": Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)),
        "gradient": Image.fromarray(ramp).convert("RGB"),
    }


def corrupt(clean: Path, into: Path, seed: int) -> dict:
    """A corrupted copy of `clean` in `into`; returns what was planted."""
    shutil.copytree(clean, into)
    rng = random.Random(seed)
    classes = sorted(p.name for p in (into / "train").iterdir())
    train = images_of(into / "train")
    flipped = []
    for path in rng.sample(train, round(FLIP_SHARE * len(train))):
        other = rng.choice([c for c in classes if c != path.parent.name])
        target = into / "train" / other / path.name
        path.rename(target)
        flipped.append(str(target))
    copies = {}
    for path in rng.sample(images_of(into / "test"), PLANTED_COPIES):
        with Image.open(path) as image:
            side = (round(image.width * COPY_SCALE), round(image.height * COPY_SCALE))
            target = into / "train" / path.parent.name / f"planted_{path.stem}.jpg"
            image.convert("RGB").resize(side, Image.Resampling.BICUBIC).save(target, quality=COPY_QUALITY)
        copies[str(target)] = str(path)
    with Image.open(train[0]) as image:
        side = image.width
    outliers = []
    for name, image in synthetic_outliers(side, seed).items():
        target = into / "train" / rng.choice(classes) / f"outlier_{name}.png"
        image.save(target)
        outliers.append(str(target))
    return {"flipped": flipped, "copies": copies, "outliers": outliers}


def inspect(folder: Path, out: Path, cache: Path, backbone: str) -> tuple[dict, float]:
    started = time.perf_counter()
    done = subprocess.run([str(TLZOO), "inspect", str(folder), "--format", "json", "--out", str(out),
                           "--backbone", backbone, "--set", f"cache.dir={cache}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"tlzoo inspect {folder} failed:\n{done.stderr}")
    return json.loads(done.stdout), time.perf_counter() - started


def cross_pairs(findings: dict) -> list[dict]:
    return [issue for issue in findings["issues"] if issue["kind"] == "leak"]


def measure(findings: dict, planted: dict) -> dict:
    flipped = {os.path.realpath(p) for p in planted["flipped"]}
    suspects = [os.path.realpath(i["path"]) for i in findings["issues"]
                if i["kind"] == "mislabelled" and i["split"] == "train"]
    top = suspects[:2 * len(flipped)]
    pairs = {(os.path.realpath(i["path"]), os.path.realpath(i["other_path"]))
             for i in findings["issues"] if i["kind"] in ("leak", "duplicate")}
    found = sum((os.path.realpath(c), os.path.realpath(o)) in pairs or (os.path.realpath(o), os.path.realpath(c))
                in pairs for c, o in planted["copies"].items())
    outliers = {os.path.realpath(i["path"]) for i in findings["issues"] if i["kind"] == "outlier"}
    planted_outliers = {os.path.realpath(p) for p in planted["outliers"]}
    planted_names = {os.path.realpath(c) for c in planted["copies"]}
    other_leaks = [i for i in cross_pairs(findings) if os.path.realpath(i["path"]) not in planted_names
                   and os.path.realpath(i["other_path"]) not in planted_names]
    return {"flipped": len(flipped), "in_top": len(flipped & set(top)), "top": len(top),
            "flagged": len(suspects), "copies_found": found, "outliers_found": len(outliers & planted_outliers),
            "other_outliers": len(outliers - planted_outliers), "other_leaks": len(other_leaks)}


def contact_sheet(pairs: list[dict], path: Path, size: int = 110) -> None:
    """Every pair side by side, numbered, 4 pairs a row."""
    per_row, cell_w, cell_h = 4, 2 * size + 14, size + 30
    rows = max(1, -(-len(pairs) // per_row))
    sheet = Image.new("RGB", (per_row * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for index, pair in enumerate(pairs):
        x, y = index % per_row * cell_w, index // per_row * cell_h
        for offset, key in ((0, "path"), (size + 4, "other_path")):
            with Image.open(pair[key]) as image:
                image = image.convert("RGB")
                image.thumbnail((size, size))
                sheet.paste(image, (x + offset, y + 14))
        draw.text((x, y + 1), f"{index + 1}: {pair['label']} / {pair['other_label']}  "
                              f"{pair['detail'].split(':')[0]}", fill="black")
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets" / "flowers12")
    parser.add_argument("--sheets", type=Path, default=None, help="write contact sheets of clean cross-split pairs")
    parser.add_argument("--quick", action="store_true", help="the first variant only")
    parser.add_argument("--no-write", action="store_true", help="print the section, do not append it")
    args = parser.parse_args()
    data = args.data.resolve()
    lines = [f"\n## tlzoo inspect on corrupted flowers12 ({time.strftime('%Y-%m-%d %H:%M')})\n",
             f"{cpu_line()} Machine shared with other work: {load_line()} at the start.\n",
             f"Corruption per variant: {FLIP_SHARE:.0%} of the training labels flipped (moved to another class's "
             f"folder, seeded), {PLANTED_COPIES} test images copied into train resized to {COPY_SCALE:.0%} and "
             f"re-encoded (JPEG q{COPY_QUALITY}), 5 synthetic outliers put into training classes.\n",
             "| variant | flipped in top 2x | flagged (train) | planted leaks found | planted outliers found "
             "| other outliers | leaks on the clean copy | leaks on the corrupt copy, planted left out "
             "| inspect wall s (clean / corrupt) | findings s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="tlzoo-inspect-bench-") as work:
        work = Path(work)
        for number, variant in enumerate(VARIANTS[:1] if args.quick else VARIANTS):
            folder = work / f"v{number}"
            clean = clean_copy(data, variant, folder / "clean")
            cache = folder / "cache"
            clean_findings, clean_wall = inspect(clean, folder / "out-clean", cache, variant.backbone)
            if args.sheets is not None:
                args.sheets.mkdir(parents=True, exist_ok=True)
                contact_sheet(cross_pairs(clean_findings), args.sheets / f"clean-leaks-v{number}.png")
            planted = corrupt(clean, folder / "corrupt", variant.seed)
            findings, wall = inspect(folder / "corrupt", folder / "out-corrupt", cache, variant.backbone)
            m = measure(findings, planted)
            row = (f"| {variant.name} | {m['in_top']} of {m['flipped']} ({m['in_top'] / m['flipped']:.0%}) "
                   f"| {m['flagged']} | {m['copies_found']} of {PLANTED_COPIES} | {m['outliers_found']} of 5 "
                   f"| {m['other_outliers']} | {len(cross_pairs(clean_findings))} | {m['other_leaks']} "
                   f"| {clean_wall:.0f} / {wall:.0f} | {findings['seconds']:.1f} |")
            print(row, flush=True)
            lines.append(row)
            shutil.rmtree(folder, ignore_errors=True)
    lines.append(f"\nLoad at the end: {load_line()}.\n")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
