"""Compiled inference paths for tlzoo's no-gradient passes: TorchScript against torch.compile and torch.export.

Issue 12 asks whether the TorchScript path of tlzoo.runtime.compiled (trace,
freeze, optimize_for_inference; deprecated upstream) should give way to
`torch.compile` (inductor, CPU) or `torch.export`. This measures, for
efficientnet_lite0 at batch 32 and 224 px, three passes:

- frozen prefix: every stage of the backbone (what a head-only cache build runs);
- evaluate: stages and head, batches of 32;
- predict: stages and head over 240 images, seven batches of 32 and a last one of 16
  (a new batch size: a static graph recompiles there, a dynamic one does not);

for each path in fp32 and bf16 autocast:

- eager: the module as it is, channels_last (the reference is eager fp32);
- jit: tlzoo's TorchScript path (trace + freeze + optimize_for_inference);
- inductor: torch.compile(backend="inductor"); inductor+freeze with inductor's
  `freezing` option (weights folded and prepacked, the CPU inference setting);
- export: torch.export with a dynamic batch, the exported program run as is;
- aoti: that exported program compiled ahead of time by AOTInductor and loaded back.

Compile/warm-up seconds (first call, including tracing and compiling) are
reported apart from steady-state images per second. Steady state is the best of
ROUNDS rounds, each round timing every path once in turn, so load from other
work on the shared machine falls on all paths alike. Outputs are compared with
eager fp32 on the same batch (max abs diff).

Run: `.venv/bin/python benchmarks/compile_paths.py` measures this CPU natively and
again in a subprocess emulating an AVX2-only CPU (ATEN_CPU_CAPABILITY=avx2,
ONEDNN_MAX_CPU_ISA=AVX2), then appends a section to benchmarks/RESULTS.md
(`--no-append` only prints it). `--kind native|avx2` runs one kind and prints JSON.
COMPILE_PATHS_SKIP=aoti leaves paths out; COMPILE_PATHS_PRECISIONS=fp32 measures fp32 only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

BATCH, SIZE, PREDICT_IMAGES = 32, 224, 240
ROUNDS = 3
EVAL_BATCHES = 3  # batches timed per evaluate / frozen-prefix measurement
PATHS = ("eager", "jit", "inductor", "inductor+freeze", "export", "aoti")
PASSES = ("frozen prefix", "evaluate", "predict")
# precisions measured; an AVX2-only CPU never runs bf16 in tlzoo (auto means fp32 there), so it may be left out
PRECISIONS = tuple(filter(None, os.environ.get("COMPILE_PATHS_PRECISIONS", "fp32,bf16").split(",")))
SKIP = set(filter(None, os.environ.get("COMPILE_PATHS_SKIP", "").split(",")))  # paths left out, e.g. "aoti"
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "TLZOO_CPU_BF16": "0"}


def build_modules():
    """lite0 with a 12-class head, as tlzoo builds it; the frozen prefix and the stages-plus-head module."""
    import torch

    from tlzoo.model.build import build_model
    from tlzoo.registry import get_registry
    from tlzoo.runtime.compiled import StagePrefix, StagesAndHead
    from tlzoo.spec import HeadSpec, ResolvedComponent

    component = get_registry().backbones.get_component("efficientnet_lite0")
    backbone = ResolvedComponent(component, component.options.model_validate({}))
    model = build_model(backbone, "pretrained", HeadSpec(), 12).model.eval()
    model.to(memory_format=torch.channels_last)
    return {"frozen prefix": StagePrefix(model, len(model.stages)).eval(), "full": StagesAndHead(model).eval()}


def autocast_for(precision: str):
    import torch

    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_runner(path: str, module, example, precision: str, workdir: Path):
    """A callable x -> output for `path`; building it compiles (or merely wraps, for eager and inductor)."""
    import torch

    if path == "eager":
        return module
    if path == "jit":
        with torch.no_grad(), autocast_for(precision), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, example[:2], check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    if path in ("inductor", "inductor+freeze"):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = path == "inductor+freeze"  # read when the graph compiles (first call)
        return torch.compile(module, backend="inductor")
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad(), autocast_for(precision):
        exported = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    if path == "export":
        return exported.module()
    package = torch._inductor.aoti_compile_and_package(exported, package_path=str(workdir / f"{precision}.pt2"))
    return torch._inductor.aoti_load_package(package)


def call(runner, x, precision: str, path: str):
    import torch

    if path == "inductor+freeze":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    elif path == "inductor":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = False
    # the exported and AOT paths carry their autocast inside the graph; calling them under it again is harmless
    with torch.inference_mode(), autocast_for(precision):
        return runner(x)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure_kind(kind: str) -> dict:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    modules = build_modules()
    x = torch.randn(BATCH, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    tail = x[:PREDICT_IMAGES % BATCH].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference = {name: module(x).float() for name, module in modules.items()}
    workdir = Path(tempfile.mkdtemp(prefix="tlzoo-compile-"))
    runners, rows, broken = {}, {}, {}
    for precision in PRECISIONS:
        for path in PATHS:
            for name, module in modules.items():
                key = (path, precision, name)
                row = rows.setdefault(f"{path}|{precision}", {"path": path, "precision": precision})
                if path in broken:  # a path that failed once is not compiled again (AOTInductor takes minutes to fail)
                    row["error"] = f"not tried: {broken[path]}"
                    continue
                if path in SKIP:
                    row["error"] = "skipped (COMPILE_PATHS_SKIP)"
                    continue
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        started = time.perf_counter()
                        runner = make_runner(path, module, x, precision, workdir / name.replace(" ", "_"))
                        out = call(runner, x, precision, path)
                        row[f"warmup_s {name}"] = round(time.perf_counter() - started, 2)
                    row[f"max_abs_diff {name}"] = float((out.float() - reference[name]).abs().max())
                    runners[key] = runner
                except Exception as exc:  # noqa: BLE001 - a failing path is a result, not a crash
                    row["error"] = f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                    broken[path] = f"{precision} {row['error']}"
                print(f"[{kind}] built {path} {precision} {name}: {row.get(f'warmup_s {name}', 'failed')}",
                      file=sys.stderr, flush=True)
    # the first predict pass also pays for the batch-16 tail (a recompile for static graphs)
    for (path, precision, name), runner in list(runners.items()):
        if name == "full":
            rows[f"{path}|{precision}"]["predict first s"] = round(timed(lambda: call(runner, tail, precision, path)), 2)
    best = {}
    for _ in range(ROUNDS):
        for (path, precision, name), runner in runners.items():
            for pass_name in (("frozen prefix",) if name == "frozen prefix" else ("evaluate", "predict")):
                if pass_name == "predict":
                    def work(r=runner, p=precision, q=path):
                        for _ in range(PREDICT_IMAGES // BATCH):
                            call(r, x, p, q)
                        call(r, tail, p, q)
                    images = PREDICT_IMAGES
                else:
                    def work(r=runner, p=precision, q=path):
                        for _ in range(EVAL_BATCHES):
                            call(r, x, p, q)
                    images = EVAL_BATCHES * BATCH
                rate = images / timed(work)
                slot = (path, precision, pass_name)
                best[slot] = max(best.get(slot, 0.0), rate)
    for (path, precision, pass_name), rate in best.items():
        rows[f"{path}|{precision}"][f"img/s {pass_name}"] = round(rate, 1)
    return {"kind": kind, "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "rows": list(rows.values())}


def run_kind(kind: str) -> dict:
    env = dict(os.environ, **(AVX2_ENV if kind == "avx2" else {}))
    done = subprocess.run([sys.executable, __file__, "--kind", kind], env=env, stdout=subprocess.PIPE, check=True)
    return json.loads(done.stdout)


def cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "")
    marks = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags.split()]
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs, flags {' '.join(marks)}"


def table(result: dict) -> list[str]:
    lines = [f"**{result['kind']}** (ATen capability {result['capability']}, torch {result['torch']}, "
             f"{result['threads']} threads)", "",
             "| path | precision | warm-up s (prefix / full) | frozen prefix img/s | evaluate img/s | predict img/s "
             "| first predict tail s | max abs diff vs eager fp32 (prefix / logits) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        if "error" in row and "img/s evaluate" not in row:
            lines.append(f"| {row['path']} | {row['precision']} | failed: {row['error']} | | | | | |")
            continue
        get = lambda key, fmt="{:.1f}": fmt.format(row[key]) if key in row else "-"  # noqa: E731
        lines.append(f"| {row['path']} | {row['precision']} | {get('warmup_s frozen prefix')} / {get('warmup_s full')} "
                     f"| {get('img/s frozen prefix')} | {get('img/s evaluate')} | {get('img/s predict')} "
                     f"| {get('predict first s', '{:.2f}')} | {get('max_abs_diff frozen prefix', '{:.1e}')} / "
                     f"{get('max_abs_diff full', '{:.1e}')} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("native", "avx2"))
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    if args.kind:
        print(json.dumps(measure_kind(args.kind)))
        return
    started = time.perf_counter()
    load_before = os.getloadavg()
    results = [run_kind("native"), run_kind("avx2")]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {stamp}: compiled inference paths (benchmarks/compile_paths.py)", "",
             f"{cpu_model()}. efficientnet_lite0, 12-class head, batch {BATCH}, {SIZE} px, synthetic inputs; "
             f"steady state best of {ROUNDS} interleaved rounds; wall {time.perf_counter() - started:.0f} s; "
             f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}.", ""]
    for result in results:
        lines += table(result) + [""]
    text = "\n".join(lines)
    print(text)
    if not args.no_append:
        with open(Path(__file__).with_name("RESULTS.md"), "a", encoding="utf-8") as out:
            out.write("\n" + text)


if __name__ == "__main__":
    main()
