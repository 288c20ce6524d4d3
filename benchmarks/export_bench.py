"""Predict throughput on the flowers12 test split: exported files against tlzoo's own path and plain eager.

    python benchmarks/export_bench.py [--run RUN_DIR] [--repeat 3]

RUN_DIR is a run of examples/flowers12.json (trained into /tmp/f12run when
missing). The script exports it to ONNX (also with int8 weights) and pt2 with
`tlzoo export`, then times, each in its own process, predicting the 240 test
images from their files: decode, resize, crop and normalize included, the
model loaded beforehand, best of --repeat passes. Measured: onnxruntime on the
ONNX file (fp32, and int8 when it was kept), the pt2 program in eager torch,
`tlzoo predict RUN_DIR`'s own path (the precision its run resolved: bf16 on a
CPU with native bf16, else the compiled fp32 path), and a plain eager fp32
NCHW loop. Top-1 agreement with the plain loop and test
accuracy come with each. Appends a section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = (REPO / ".." / "shared" / "datasets" / "flowers12").resolve()
RESULTS = HERE / "RESULTS.md"
TLZOO = str(Path(sys.executable).parent / "tlzoo")
sys.path.insert(0, str(HERE))

from report import cpu_model, load_line  # noqa: E402

WAYS = {  # name: (what, environment)
    "onnx": ("onnxruntime, ONNX fp32 (`tlzoo predict best.onnx`)", {}),
    "onnx_int8": ("onnxruntime, ONNX dynamic int8 (`tlzoo predict best.int8.onnx`)", {}),
    "pt2": ("torch.export program, eager (`tlzoo predict best.pt2`)", {}),
    "tlzoo": ("`tlzoo predict RUN_DIR`, the path this CPU chooses", {}),
    "eager": ("plain eager fp32 NCHW loop, batch 32", {}),
}


def test_images() -> list[tuple[Path, str]]:
    root = DATA / "test"
    return [(p, p.parent.name) for p in sorted(root.rglob("*")) if p.is_file()]


def measure(way: str, run_dir: Path, repeat: int) -> dict:
    """In a child process: load once, then time `repeat` full passes over the test split."""
    from tlzoo.registry import get_registry

    items = test_images()
    paths = [p for p, _ in items]
    if way in ("onnx", "onnx_int8", "pt2"):
        from tlzoo.export.predicting import load_exported, predict_exported

        name = {"onnx": "best.onnx", "onnx_int8": "best.int8.onnx", "pt2": "best.pt2"}[way]
        model = load_exported(run_dir / name)
        run = lambda: predict_exported(model, paths, 1)  # noqa: E731
    elif way == "tlzoo":
        from tlzoo.engine.inference import load_run, predict

        loaded = load_run(run_dir, get_registry())
        run = lambda: predict(loaded, paths, 1, log=lambda line: None)  # noqa: E731
    else:
        run = plain_eager(run_dir, paths)
    times, results = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        results = run()
        times.append(time.perf_counter() - started)
    labels = [r.top[0][0] if r.top else None for r in results]
    return {"seconds": min(times), "labels": labels, "accuracy": sum(l == t for l, (_, t) in zip(labels, items))
            / len(items)}


def plain_eager(run_dir: Path, paths: list[Path]):
    """What a user writes without tlzoo's fast path: eval transform, fp32 NCHW batches of 32."""
    import torch

    from tlzoo.data.images import load_rgb
    from tlzoo.data.transforms import build_eval_transform
    from tlzoo.engine.inference import Prediction, load_run
    from tlzoo.registry import get_registry
    from tlzoo.runtime.device import configure_threads

    configure_threads()
    loaded = load_run(run_dir, get_registry())
    model = loaded.model.float().to(memory_format=torch.contiguous_format).eval()
    transform = build_eval_transform(loaded.data_config)

    def run():
        out = []
        with torch.inference_mode():
            for start in range(0, len(paths), 32):
                chunk = paths[start:start + 32]
                logits = model(torch.stack([transform(load_rgb(p)) for p in chunk]))
                out += [Prediction(p, [(loaded.classes[i], 1.0)]) for p, i in zip(chunk, logits.argmax(1).tolist())]
        return out

    return run


def in_child(way: str, run_dir: Path, repeat: int) -> dict:
    env = {**os.environ, **WAYS[way][1]}
    done = subprocess.run([sys.executable, __file__, "--measure", way, "--run", str(run_dir), "--repeat",
                           str(repeat)], capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{way} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("/tmp/f12run"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reuse-exports", action="store_true",
                        help="keep best.onnx, best.int8.onnx and best.pt2 already in RUN_DIR (export time not measured)")
    parser.add_argument("--measure", choices=list(WAYS))
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.run, args.repeat)))
        return
    started = datetime.datetime.now().astimezone()
    load_before = load_line()
    if not (args.run / "best.safetensors").exists():
        print(f"training {args.run} with examples/flowers12.json", flush=True)
        timed([TLZOO, "run", "examples/flowers12.json", "--output", str(args.run)])
    exports = {}
    for fmt, extra in (("onnx", ["--quantize", "dynamic"]), ("pt2", [])):
        if args.reuse_exports and (args.run / f"best.{fmt}").exists():
            seconds = float("nan")
        else:
            seconds, _ = timed([TLZOO, "export", str(args.run), "--format", fmt, *extra])
        parity = json.loads((args.run / f"best.{fmt}.parity.json").read_text())
        exports[fmt] = (seconds, parity)
        print(f"export {fmt}: {seconds:.1f}s; {parity['parity']}", flush=True)
    figures = {}
    for way in WAYS:
        if way == "onnx_int8" and not (args.run / "best.int8.onnx").exists():
            continue  # not kept: its agreement was below 0.99 (in the export line)
        figures[way] = in_child(way, args.run, args.repeat)
        print(f"{way}: {240 / figures[way]['seconds']:.1f} img/s, accuracy {figures[way]['accuracy']:.4f}", flush=True)
    append(started, load_before, args, exports, figures)


def append(started, load_before, args, exports, figures) -> None:
    import torch

    reference = figures["eager"]["labels"]
    count = len(reference)
    lines = [f"\n## {started:%Y-%m-%d %H:%M %Z}: export and predict throughput (benchmarks/export_bench.py)\n",
             f"CPU: {cpu_model()} ({os.cpu_count()} cores, torch CPU capability "
             f"{torch.backends.cpu.get_cpu_capability()}). Run {args.run} (examples/flowers12.json). "
             f"Before: {load_before}; after: {load_line()}. Predict: the {count} flowers12 test images from their "
             f"files (decode, resize, crop, normalize, model), model loaded beforehand, best of {args.repeat} "
             "passes, each way in its own process.\n"]
    for fmt, (seconds, parity) in exports.items():
        p = parity["parity"]
        extra = ""
        if parity.get("quantized"):
            q = parity["quantized"]
            extra = (f"; int8: {'kept' if q['kept'] else 'not kept'}, top-1 agreement "
                     f"{q['parity']['top1_agreement']:.4f}, max |logit diff| {q['parity']['max_abs_logit_diff']:.2e}"
                     if q.get("parity") else f"; int8 failed: {q.get('error')}")
        took = "reused, not timed" if seconds != seconds else f"{seconds:.1f} s"
        lines.append(f"- `tlzoo export --format {fmt}` ({parity['exporter']}): {took}; parity on "
                     f"{p['images']} images: top-1 agreement {p['top1_agreement']:.4f}, max |logit diff| "
                     f"{p['max_abs_logit_diff']:.2e}{extra}")
    lines += ["", "| predict way | s | img/s | vs plain eager | top-1 agreement with plain eager | test top-1 |",
              "|---|---:|---:|---:|---:|---:|"]
    base = figures["eager"]["seconds"]
    for way, f in figures.items():
        what = WAYS[way][0]
        agreement = sum(a == b for a, b in zip(f["labels"], reference)) / count
        lines.append(f"| {what} | {f['seconds']:.2f} | {count / f['seconds']:.1f} | {base / f['seconds']:.2f}x | "
                     f"{agreement:.4f} | {f['accuracy']:.4f} |")
    text = "\n".join(lines) + "\n"
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
