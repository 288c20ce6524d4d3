"""Compiled inference paths for tlzoo's no-gradient passes: TorchScript against torch.export and inductor.

Issue 12 asks whether the TorchScript path of tlzoo.runtime.compiled (trace,
freeze, optimize_for_inference; deprecated upstream) should give way to
`torch.export` or `torch.compile` (inductor, CPU). This measures
efficientnet_lite0 at batch 32 and 224 px on two passes over every STRIDE-th
image of each flowers12 test class (48 images, all 12 classes: a batch of 32 and
a last one of 16):

- frozen prefix: every stage of the backbone (what a head-only cache build runs),
  timed on the batch of 32;
- full: stages and head (what evaluate and predict run), both batches. Static
  inductor graphs would recompile for the 16, so that path pads the last batch to
  32 (and still counts 48 images); the others take any batch size.

Each path compiles the stages once; the head (lite0's is one Linear 1280 -> 12,
under 0.1% of the work) runs eager after them. That halves the compiling on this
loaded machine and changes the figures by less than their noise;

for these paths, in fp32 and bf16 autocast on this CPU, and fp32 on an emulated
AVX2-only CPU (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2: tlzoo never runs
bf16 there):

- eager: the module as it is, channels_last;
- folded: BatchNorm folded into the convolutions (tlzoo.runtime.folding), channels_last: tlzoo's path since
  2026-12-02;
- jit: TorchScript (trace + freeze + optimize_for_inference), tlzoo's path until 2026-12-02;
- export: torch.export with a dynamic batch, the ExportedProgram's module() run;
- inductor+freeze: torch.compile(backend="inductor") with
  torch._inductor.config.freezing=True (weights folded and prepacked).

The 2-core machine is shared with other sessions' work: the section records
the load averages; compare figures within one table, not across days.

Every variant (path, precision, CPU kind) lives in its own worker process, so no
inductor setting or dynamo cache leaks from one to the next, with an empty
inductor cache of its own (warm-up is a cold compile). Workers are built one
after another: warm-up seconds are the first call on one batch of 32, tracing
and compiling included; "tail s" is the first call on the last, smaller batch. Then every worker times one pass per round in
turn, ROUNDS interleaved rounds, so load from other work falls on all variants
alike; in its turn a worker runs REPEATS passes back to back (the others' turns leave its caches
cold) and steady state is the best of them all. Outputs are compared on the same inputs
with native eager fp32: max abs diff of the prefix features and of the logits,
and top-1 agreement, over the 48 images.

Run: `.venv/bin/python benchmarks/compile_paths.py --run RUN_DIR` (a finished
flowers12 run of lite0; without it, pretrained lite0 with a seeded untrained
12-class head) appends a section to benchmarks/RESULTS.md (`--no-append` only
prints it). `--budget S` starts no worker after 3/4 of S seconds and no round after S.
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

BATCH, STRIDE, ROUNDS, REPEATS = 32, 6, 3, 3  # every STRIDE-th test image of a class; passes per turn
PATHS = ("eager", "folded", "jit", "export", "inductor+freeze")
# (kind, precision): bf16 autocast only natively; an AVX2-only CPU resolves `precision: auto` to fp32
VARIANT_KINDS = (("native", "fp32"), ("avx2", "fp32"), ("native", "bf16"))
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "TLZOO_CPU_BF16": "0"}
DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flowers12"
PROTOCOL = "@@ "  # worker reply lines start with this; anything else a library prints is passed over


# --- worker side -------------------------------------------------------------------------------------------

def build_modules(run_dir: str | None):
    """The frozen prefix (every stage) and stages-plus-head of lite0, as tlzoo builds them."""
    import torch

    from tlzoo.registry import get_registry
    from tlzoo.runtime.fast_pass import Stages

    if run_dir:
        from tlzoo.engine.inference import load_run

        model = load_run(Path(run_dir), get_registry()).model
    else:
        from tlzoo.model.build import build_model
        from tlzoo.spec import HeadSpec, ResolvedComponent

        torch.manual_seed(0)  # the same untrained head in every worker
        component = get_registry().catalog("backbones").get_component("efficientnet_lite0")
        backbone = ResolvedComponent(component, component.options.model_validate({}))
        model = build_model(backbone, "pretrained", HeadSpec(), 12).model
    model.eval().to(memory_format=torch.channels_last)
    return Stages(model).eval(), model.head.eval()


def autocast_for(precision: str):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def make_runner(path: str, module, example, precision: str):
    """A callable batch -> output; building it traces or exports (inductor compiles on its first call)."""
    import torch

    if path == "eager":
        return module
    if path == "folded":
        from tlzoo.runtime.folding import fold_batchnorm

        return fold_batchnorm(module, example[:2])[0]
    if path == "jit":
        with torch.no_grad(), autocast_for(precision), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, example[:2], check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    if path == "export":
        batch = torch.export.Dim("batch", min=1, max=1024)
        with torch.no_grad(), autocast_for(precision):
            return torch.export.export(module, (example,), dynamic_shapes=({0: batch},)).module()
    if path == "inductor+freeze":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # this process compiles nothing else, so no dynamo cache hides it
        return torch.compile(module, backend="inductor")
    raise ValueError(path)


class Worker:
    def __init__(self, path: str, precision: str, inputs: str, run_dir: str | None, out_dir: Path):
        import torch
        from safetensors.torch import load_file

        torch.set_num_threads(os.cpu_count() or 1)
        self.path, self.precision, self.out_dir = path, precision, out_dir
        images = load_file(inputs)["images"].contiguous(memory_format=torch.channels_last)
        self.batches = [images[i:i + BATCH] for i in range(0, len(images), BATCH)]
        self.stages, self.head = build_modules(run_dir)
        self.runner, self.ready = None, {}

    def call(self, x):
        import torch

        real = len(x)
        if self.path == "inductor+freeze" and real < BATCH:  # a static graph: pad rather than recompile
            x = torch.cat([x, x[:1].expand(BATCH - real, *x.shape[1:])]).contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast_for(self.precision):
            return self.runner(x)[:real]

    def passes(self) -> tuple[float, float, list, list]:
        """One pass over the batches: (prefix seconds on full batches, full seconds, features, logits)."""
        import torch

        prefix_s = full_s = 0.0
        features, logits = [], []
        for x in self.batches:
            started = time.perf_counter()
            out = self.call(x)
            stages_s = time.perf_counter() - started
            with torch.no_grad(), autocast_for(self.precision):
                logits.append(self.head(out))
            full_s += time.perf_counter() - started
            if len(x) == BATCH:
                prefix_s += stages_s
            features.append(out)
        return prefix_s, full_s, features, logits

    def build(self) -> dict:
        import torch
        from safetensors.torch import save_file

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            started = time.perf_counter()
            self.runner = make_runner(self.path, self.stages, self.batches[0], self.precision)
            out = self.call(self.batches[0])
            self.ready["warmup s"] = round(time.perf_counter() - started, 2)
            started = time.perf_counter()
            self.call(self.batches[-1])
            self.ready["tail s"] = round(time.perf_counter() - started, 2)  # a new batch size
        self.ready["dtype"] = str(out.dtype).replace("torch.", "")
        _, _, features, logits = self.passes()
        save_file({"prefix": torch.cat(features).float().flatten(1).contiguous(),
                   "logits": torch.cat(logits).float().contiguous()}, str(self.out_dir / "outputs.safetensors"))
        return self.ready

    def time_pass(self) -> dict:
        """The best of REPEATS back-to-back passes: the other workers' turns leave this one's caches cold."""
        timings = [self.passes()[:2] for _ in range(REPEATS)]
        return {"prefix": min(t[0] for t in timings), "full": min(t[1] for t in timings)}


def serve(args) -> None:
    """Build, report warm-up, then time a pass on request: one `time` line in, seconds out."""
    try:
        worker = Worker(args.path, args.precision, args.inputs, args.run, Path(args.out))
        reply = {"ok": True, **worker.build()}
    except Exception as exc:  # noqa: BLE001 - a path that fails to build is a result, not a crash
        text = str(exc).splitlines()[0] if str(exc) else ""
        reply, worker = {"ok": False, "error": f"{type(exc).__name__}: {text}"[:300]}, None
    print(PROTOCOL + json.dumps(reply), flush=True)
    for line in sys.stdin:
        if worker is None or line.strip() == "quit":
            return
        print(PROTOCOL + json.dumps(worker.time_pass()), flush=True)


# --- coordinator side --------------------------------------------------------------------------------------

def prepare_inputs(run_dir: str | None, target: Path) -> tuple[Path, list[int]]:
    """Every STRIDE-th flowers12 test image through the run's eval transform, saved once for every worker."""
    import torch
    from safetensors.torch import save_file

    from tlzoo.data.images import load_rgb
    from tlzoo.data.transforms import build_eval_transform
    from tlzoo.model.backbone import DataConfig

    test = DATASET / "test"
    classes = sorted(p.name for p in test.iterdir() if p.is_dir())
    config = DataConfig(input_size=(3, 224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                        interpolation="bicubic", crop_pct=0.875)  # lite0's own
    if run_dir:
        meta = json.loads((Path(run_dir) / "best.json").read_text())
        classes, config = list(meta["classes"]), DataConfig.from_dict(meta["data_config"])
    transform = build_eval_transform(config)
    tensors, labels = [], []
    for index, name in enumerate(classes):
        for file in sorted((test / name).iterdir())[::STRIDE]:
            tensors.append(transform(load_rgb(file)))
            labels.append(index)
    path = target / "inputs.safetensors"
    save_file({"images": torch.stack(tensors).contiguous()}, str(path))
    return path, labels


class Remote:
    """One worker process: the coordinator's handle on it."""

    def __init__(self, kind: str, path: str, precision: str, inputs: Path, run_dir: str | None, root: Path):
        self.kind, self.path, self.precision = kind, path, precision
        self.out = root / f"{kind}-{precision}-{path.replace('+', '-')}"
        self.out.mkdir()
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(self.out / "inductor-cache"),
                   **(AVX2_ENV if kind == "avx2" else {}))
        command = [sys.executable, __file__, "--worker", "--path", path, "--precision", precision,
                   "--inputs", str(inputs), "--out", str(self.out)] + (["--run", run_dir] if run_dir else [])
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.row: dict = {"kind": kind, "path": path, "precision": precision}
        self.best: dict[str, float] = {}

    @property
    def label(self) -> str:
        return f"{self.kind} {self.precision} {self.path}"

    def reply(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(PROTOCOL):
                return json.loads(line[len(PROTOCOL):])
        return {"ok": False, "error": f"worker exited with status {self.process.wait()}"}

    def time_pass(self, images: dict[str, int]) -> None:
        self.process.stdin.write("time\n")
        self.process.stdin.flush()
        for name, seconds in self.reply().items():
            self.best[name] = max(self.best.get(name, 0.0), images[name] / seconds)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        self.process.wait(timeout=60)


def agreement(remotes: list[Remote], labels: list[int]) -> None:
    import torch
    from safetensors.torch import load_file

    reference = next(r for r in remotes if (r.kind, r.precision, r.path) == ("native", "fp32", "eager"))
    ref = load_file(str(reference.out / "outputs.safetensors"))
    truth = torch.tensor(labels)
    for remote in remotes:
        if not remote.row.get("ok"):
            continue
        got = load_file(str(remote.out / "outputs.safetensors"))
        remote.row["prefix max abs diff"] = float((got["prefix"] - ref["prefix"]).abs().max())
        remote.row["logits max abs diff"] = float((got["logits"] - ref["logits"]).abs().max())
        top1 = got["logits"].argmax(1)
        remote.row["top-1 agreement"] = float((top1 == ref["logits"].argmax(1)).float().mean())
        remote.row["test top-1"] = float((top1 == truth).float().mean())


def measure(run_dir: str | None, budget: float, paths: tuple[str, ...] = PATHS) -> dict:
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="tlzoo-compile-paths-"))
    inputs, labels = prepare_inputs(run_dir, root)
    remotes: list[Remote] = []
    loads = {"start": os.getloadavg()}
    for path in paths:  # path-major, so a spent budget leaves out the slowest compiles, not a whole CPU kind
        for kind, precision in VARIANT_KINDS:
            if time.perf_counter() - started > budget * 0.75:
                print(f"budget spent: {kind} {precision} {path} not built", file=sys.stderr, flush=True)
                continue
            remote = Remote(kind, path, precision, inputs, run_dir, root)
            remote.row.update(remote.reply())
            remote.row["load at build"] = round(os.getloadavg()[0], 1)
            print(f"built {remote.label}: {remote.row}", file=sys.stderr, flush=True)
            remotes.append(remote)
    loads["built"] = os.getloadavg()
    live = [r for r in remotes if r.row.get("ok")]
    agreement(remotes, labels)
    rounds = 0
    for round_index in range(ROUNDS):
        if rounds and time.perf_counter() - started > budget:
            break
        order = live[round_index % max(1, len(live)):] + live[:round_index % max(1, len(live))]  # rotate the start
        for remote in order:
            remote.time_pass({"prefix": len(labels) // BATCH * BATCH, "full": len(labels)})
        rounds += 1
        loads[f"round {rounds}"] = os.getloadavg()
        print(f"round {rounds} done at {time.perf_counter() - started:.0f} s, load {os.getloadavg()}",
              file=sys.stderr, flush=True)
    for remote in remotes:
        remote.close()
        remote.row.update({f"img/s {name}": round(rate, 1) for name, rate in remote.best.items()})
    import torch

    return {"rows": [r.row for r in remotes], "rounds": rounds, "loads": loads, "images": len(labels),
            "wall_s": round(time.perf_counter() - started), "torch": torch.__version__, "threads": os.cpu_count()}


def cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    marks = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in fields.get("Flags", "").split()]
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs, flags {' '.join(marks)}"


def table(result: dict) -> list[str]:
    lines = ["| CPU | precision | path | warm-up s | tail s | frozen prefix img/s "
             "| full img/s | prefix max abs diff | logits max abs diff | top-1 agreement | test top-1 |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        head = f"| {row['kind']} | {row['precision']} | {row['path']} |"
        if not row.get("ok"):
            lines.append(f"{head} failed: {row.get('error', '?')} | | | | | | | |")
            continue
        get = lambda key, fmt="{:.1f}": fmt.format(row[key]) if key in row else "-"  # noqa: E731
        lines.append(f"{head} {get('warmup s')} | {get('tail s', '{:.2f}')} "
                     f"| {get('img/s prefix')} | {get('img/s full')} | {get('prefix max abs diff', '{:.1e}')} "
                     f"| {get('logits max abs diff', '{:.1e}')} | {get('top-1 agreement', '{:.4f}')} "
                     f"| {get('test top-1', '{:.4f}')} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a finished lite0 flowers12 run directory (its best weights)")
    parser.add_argument("--budget", type=float, default=1500.0, help="no worker starts after 3/4 of this many seconds, no round after all of them")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of " + ",".join(PATHS))
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--json", help="also write the raw result here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        serve(args)
        return
    paths = tuple(args.paths.split(","))
    if unknown := [path for path in paths if path not in PATHS]:
        parser.error(f"unknown path(s) {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    result = measure(args.run, args.budget, paths)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    loads = "; ".join(f"{k} {' '.join(f'{v:.1f}' for v in value)}" for k, value in result["loads"].items())
    lines = [f"## {stamp}: compiled inference paths, steady state (benchmarks/compile_paths.py)", "",
             f"{cpu_model()}; torch {result['torch']}, {result['threads']} threads; efficientnet_lite0 at batch "
             f"{BATCH}, 224 px, {'the weights of ' + args.run if args.run else 'an untrained seeded head'}; "
             f"every {STRIDE}th image of each flowers12 test class ({result['images']}). Best of {result['rounds']} interleaved rounds of {REPEATS} back-to-back passes per worker; "
             f"wall {result['wall_s']} s; load averages (1/5/15 min) {loads}.", ""]
    text = "\n".join(lines + table(result))
    print(text)
    if not args.no_append:
        with open(Path(__file__).with_name("RESULTS.md"), "a", encoding="utf-8") as out:
            out.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
