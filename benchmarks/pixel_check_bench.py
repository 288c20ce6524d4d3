"""`tlzoo inspect` with and without the pixel check of hash matches (tlzoo.findings.duplicates.confirmed).

For each data folder (train/ val/ test/ of class folders): the pairs inspect reports with the check off (every
hash match within 8 bits that the features do not contradict) and on, by evidence, and which ones the check
dropped. `--plant` first copies the folder and puts 16 copies of its test images into train (grey, half size,
brighter, cropped 6 % a side; seeded): real leaks, which the check must keep. Appends a section to RESULTS.md.

    .venv/bin/python benchmarks/pixel_check_bench.py [--plant] [--cache DIR] FOLDER ...
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import io
import random
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

import tlzoo.findings.duplicates as duplicates
from report import cpu_line, load_line  # benchmarks/report.py, beside this script
from results_md import publish
from tlzoo.cli.main import app

HERE = Path(__file__).resolve().parent
COPIES = {
    "grey": lambda image: ImageOps.grayscale(image).convert("RGB"),
    "half": lambda image: image.resize((max(8, image.width // 2), max(8, image.height // 2))),
    "crop": lambda image: image.crop((round(image.width * .06), round(image.height * .06),
                                      round(image.width * .94), round(image.height * .94))),
    "bright": lambda image: ImageEnhance.Contrast(ImageEnhance.Brightness(image).enhance(1.25)).enhance(1.15),
}


def plant(source: Path, target: Path, count: int = 16, seed: int = 11) -> set[frozenset]:
    """A copy of `source` with `count` test images copied into train; the planted (original, copy) pairs."""
    shutil.copytree(source, target)
    tests = sorted(path for path in (target / "test").rglob("*") if path.is_file())
    planted = set()
    for number, original in enumerate(random.Random(seed).sample(tests, min(count, len(tests)))):
        how = list(COPIES)[number % len(COPIES)]
        copy = target / "train" / original.parent.name / f"copy_{how}_{original.stem}.jpg"
        with Image.open(original) as image:
            COPIES[how](image.convert("RGB")).save(copy, quality=80)
        planted.add(frozenset((str(original), str(copy))))
    return planted


def reported(folder: Path, out: Path, cache: Path, agreement: float) -> dict[frozenset, str]:
    """{pair: its evidence} of the duplicates and leaks inspect reports with PIXEL_AGREEMENT = `agreement`."""
    duplicates.PIXEL_AGREEMENT = agreement
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        app(["inspect", str(folder), "--out", str(out), "--set", f"cache.dir={cache}"], standalone_mode=False)
    with (out / "issues.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["kind"] in ("duplicate", "leak")]
    return {frozenset((row["path"], row["other_path"])): row["detail"].split(":")[0] for row in rows}


def counts(pairs: dict) -> str:
    return ", ".join(f"{how} {number}" for how, number in collections.Counter(pairs.values()).most_common()) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--plant", action="store_true", help="plant 16 copies of test images into train first")
    parser.add_argument("--cache", type=Path, default=None, help="activation cache (default: a temporary one)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    checked = duplicates.PIXEL_AGREEMENT
    started, rows = time.monotonic(), []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        cache = args.cache or work / "cache"
        for folder in args.folders:
            planted = set()
            if args.plant:
                planted = plant(folder.resolve(), work / folder.name)
                folder = work / folder.name
            off = reported(folder, work / "out-off", cache, -2.0)
            on = reported(folder, work / "out-on", cache, checked)
            found = f"{len(planted & set(off))} / {len(planted & set(on))} of {len(planted)}" if planted else "-"
            rows.append(f"| {folder.name} | {len(off)} ({counts(off)}) | {len(on)} ({counts(on)}) | "
                        f"{len(set(off) - set(on))} | {len(set(on) - set(off))} | {found} |")
            print(rows[-1], flush=True)
    text = (f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: the pixel check of hash matches "
            f"(benchmarks/pixel_check_bench.py{' --plant' if args.plant else ''})\n\n"
            f"{cpu_line().rstrip('.')}. Before: {load_line()}. "
            f"PIXEL_AGREEMENT {checked}; efficientnet_lite0 features; {time.monotonic() - started:.0f} s in all.\n\n"
            "| data set | pairs reported, check off (by evidence) | check on | dropped | added | planted copies "
            "found (off / on) |\n|---|---|---|---:|---:|---|\n" + "\n".join(rows) + "\n")
    publish(text, append=not args.no_write)


if __name__ == "__main__":
    main()
