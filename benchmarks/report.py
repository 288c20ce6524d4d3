"""The benchmark's tables: rows of measurements, PASS/FAIL checks, and the machine they ran on."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import psutil


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_line() -> str:
    """The CPU this section ran on, what `precision: auto` meant there, and any ISA emulation in force."""
    import torch

    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in line.split()]
                break
    except OSError:
        pass
    forced = {name: os.environ[name] for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "TLZOO_CPU_BF16")
              if name in os.environ}
    from tlzoo.runtime.precision import auto_precision

    line = (f"CPU: {cpu_model()} (flags {' '.join(flags) or 'unknown'}; torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}); `precision: auto` = {auto_precision(torch.device('cpu'))}")
    if forced:
        line += "; forced by " + ", ".join(f"{k}={v}" for k, v in forced.items())
        if "ATEN_CPU_CAPABILITY" in forced:
            line += " (an AVX2-only CPU emulated on this one)"
    return line + "."


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def machine_header() -> str:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        "# tlzoo benchmark results\n\n"
        "Written by `make bench` (benchmarks/bench.py); each run appends a section below.\n\n"
        f"Machine: {cpu_model()}, {cores} cores usable "
        f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}. No GPU used.\n\n"
        "Columns: wall = process wall time (start to exit, model build and data scan included); "
        "img/s = training images x epochs / wall for head-only and scale runs, training images per "
        "epoch-second (train + test pass) for full and partial fine-tunes, images / pass time for predict; "
        "peak RSS = the main process's RSS plus its loader workers' unique memory (USS; their RSS would "
        "count the parent's copy-on-write pages again), sampled every 0.1 s.\n"
    )


class Report:
    def __init__(self, sections: list[str], args):
        self.sections, self.args = sections, args
        self.rows: list[tuple] = []
        self.checks: list[tuple[str, bool, str]] = []
        self.notes: list[str] = []
        self.load_before = load_line()
        self.cpu = cpu_line()
        self.started = datetime.datetime.now().astimezone()
        self.seconds = 0.0
        self.load_after = ""

    def row(self, section: str, what: str, wall: float, per_second: float, top1: float | None, rss: int | None):
        self.rows.append((section, what, wall, per_second, top1, rss))
        print(f"  {section}: {what}: {wall:.1f}s, {per_second:.1f} img/s, top-1 "
              f"{'-' if top1 is None else f'{top1:.4f}'}, peak RSS {'-' if rss is None else f'{rss / 2**30:.2f} GiB'}",
              flush=True)

    def check(self, target: str, passed: bool, detail: str) -> None:
        self.checks.append((target, passed, detail))
        print(f"  {'PASS' if passed else 'FAIL'} {target}: {detail}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def finish(self, seconds: float) -> None:
        self.seconds, self.load_after = seconds, load_line()

    def markdown(self) -> str:
        lines = [f"\n## {self.started:%Y-%m-%d %H:%M %Z}: sections {', '.join(self.sections)}\n", self.cpu + "\n",
                 f"Benchmark wall time {self.seconds / 60:.1f} min; plain head-only epochs {self.args.plain_epochs}, "
                 f"full fine-tune epochs {self.args.full_epochs}. Before: {self.load_before}; after: "
                 f"{self.load_after} (on 2 cores, a load above ~2 means other work shared the machine). "
                 "Peak RSS: main process RSS + loader workers' USS.\n",
                 "| section | run | wall s | img/s | best top-1 | peak RSS GiB |",
                 "|---|---|---:|---:|---:|---:|"]
        for section, what, wall, per_second, top1, rss in self.rows:
            lines.append(f"| {section} | {what} | {wall:.1f} | {per_second:.1f} | "
                         f"{'-' if top1 is None else f'{top1:.4f}'} | {'-' if rss is None else f'{rss / 2**30:.2f}'} |")
        lines += ["", "| target | result | figures |", "|---|---|---|"]
        lines += [f"| {target} | {'PASS' if ok else 'FAIL'} | {detail} |" for target, ok, detail in self.checks]
        lines += [f"\n- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"
