"""`tlzoo serve` under load, on loopback only, next to `tlzoo predict` on the same images.

    python benchmarks/serve_bench.py [--run RUN_DIR] [--requests 480] [--rss-requests 5000] [--no-append]

RUN_DIR is a run of examples/flowers12.json (trained into a temporary folder
when not given). The load generator is bounded: N client threads, each with
one keep-alive connection, send a fixed number of requests between them, one
flowers12 test JPEG per request (cycling through the 240), as fast as answers
come. For 1, 4 and 16 clients it reports images per second and p50/p95/p99
latency, against a server with batching on (the defaults: --max-batch 32
--max-wait-ms 10) and off (--max-batch 1 --max-wait-ms 0). Every answer is
compared with `tlzoo predict RUN_DIR` on the same files (its JSON, every
digit). Then one request each of 32, 16, ..., 1 images (so every batch size
has run), 5,000 more requests at 16 clients, and the server's RSS and peak RSS
(VmHWM) before and after them. `tlzoo predict` itself is timed twice: the
whole command, and predict()'s pass over the 240 files in a process that has
the model loaded. Appends a section to benchmarks/RESULTS.md.

Targets: 16 clients at least 1.5x the one-client images per second (batching
on), no errors, answers identical to `tlzoo predict`, and the peak RSS after
the 5,000 requests within 2 % of the peak before them (current RSS moves with
the allocator: tlzoo keeps freed activation buffers for forward passes).
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = (REPO / ".." / "shared" / "datasets" / "flowers12").resolve()
RESULTS = HERE / "RESULTS.md"
TLZOO = str(Path(sys.executable).parent / "tlzoo")
sys.path.insert(0, str(HERE))

from report import cpu_line, load_line  # noqa: E402

CLIENTS = (1, 4, 16)
PEAK_NOISE = 0.02  # peak RSS may move this much between two measurements of the same steady state
CONFIGS = {"batching on": [], "batching off": ["--max-batch", "1", "--max-wait-ms", "0"]}


def test_images() -> list[Path]:
    return sorted(p for p in (DATA / "test").rglob("*") if p.is_file())


def predict_pass(run_dir: Path) -> dict:
    """In a child process: load the run, then time predict() over the test files (best of 2 passes)."""
    from tlzoo.engine.inference import load_run, predict
    from tlzoo.registry import get_registry

    run = load_run(run_dir, get_registry())
    paths = test_images()
    times = []
    for _ in range(2):
        started = time.perf_counter()
        results = predict(run, paths, 5)
        times.append(time.perf_counter() - started)
    assert all(r.error is None for r in results)
    return {"seconds": min(times), "precision": f"{run.precision} ({run.fast} path)"}


class ServerProcess:
    def __init__(self, run_dir: Path, extra: list[str]):
        self.process = subprocess.Popen([TLZOO, "serve", str(run_dir), "--port", "0", *extra],
                                        stderr=subprocess.PIPE, text=True)
        self.lines = []
        while True:
            line = self.process.stderr.readline()
            if not line:
                raise SystemExit("the server ended before listening:\n" + "".join(self.lines))
            self.lines.append(line)
            if found := re.search(r"listening on http://([\d.]+):(\d+)/", line):
                self.host, self.port = found.group(1), int(found.group(2))
                break
        threading.Thread(target=self._drain, daemon=True).start()
        while self.get("/health")[0] != 200:
            time.sleep(0.2)

    def _drain(self):
        for line in self.process.stderr:
            self.lines.append(line)

    def get(self, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        except OSError:
            return 0, b""
        finally:
            connection.close()

    def memory(self) -> dict:
        """Current and peak resident set size of the server, MiB (from /proc)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        field = lambda name: int(re.search(rf"^{name}:\s+(\d+) kB", status, re.M).group(1)) / 1024  # noqa: E731
        return {"rss": field("VmRSS"), "peak": field("VmHWM")}

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(60)


def load(server: ServerProcess, images: list[tuple[str, bytes]], clients: int, requests: int) -> dict:
    """`clients` threads with keep-alive connections send `requests` single-image requests between them."""
    latencies: list[float] = []
    answers: dict[str, list] = {}
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client():
        connection = http.client.HTTPConnection(server.host, server.port, timeout=120)
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            name, data = images[index % len(images)]
            started = time.perf_counter()
            try:
                connection.request("POST", "/predict", body=data, headers={"Content-Type": "image/jpeg"})
                response = connection.getresponse()
                body = response.read()
            except OSError as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                connection.close()
                connection = http.client.HTTPConnection(server.host, server.port, timeout=120)
                continue
            took = time.perf_counter() - started
            with lock:
                latencies.append(took)
                if response.status != 200:
                    errors.append(f"{response.status}: {body[:200]!r}")
                else:
                    answers.setdefault(name, json.loads(body)["predictions"][0]["top"])
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    quantile = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"clients": clients, "requests": requests, "wall": wall, "rate": len(latencies) / wall,
            "p50": quantile(0.50), "p95": quantile(0.95), "p99": quantile(0.99), "errors": errors,
            "answers": answers, "mean_batch": None}


def prime(server: ServerProcess, images: list[tuple[str, bytes]]) -> None:
    """One request of 32, 16, ... 1 images: each batch size's buffers exist before the soak.

    tlzoo keeps freed activation buffers for forward passes (tlzoo.runtime.device.keep_freed_memory), so
    the first batch of a new largest size raises RSS once, and for good; a soak that met its first full
    batch midway would show that step as growth.
    """
    for size in (32, 16, 8, 4, 2, 1):
        boundary = "tlzoo-serve-bench"
        body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                        f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n" for name, data in images[:size])
        body += f"--{boundary}--\r\n".encode()
        connection = http.client.HTTPConnection(server.host, server.port, timeout=120)
        connection.request("POST", "/predict", body=body,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = connection.getresponse()
        response.read()
        connection.close()
        if response.status != 200:
            raise SystemExit(f"priming with {size} images answered {response.status}")


def mean_batch(server: ServerProcess, before: tuple[float, float]) -> tuple[float, tuple[float, float]]:
    """Images per forward pass since `before` (from /metrics), and the new counts."""
    text = server.get("/metrics")[1].decode()
    count = float(re.search(r"^tlzoo_batch_size_count (\S+)$", text, re.M).group(1))
    total = float(re.search(r"^tlzoo_batch_size_sum (\S+)$", text, re.M).group(1))
    passes = count - before[0]
    return ((total - before[1]) / passes if passes else float("nan")), (count, total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a run of examples/flowers12.json (trained when not given)")
    parser.add_argument("--requests", type=int, default=480, help="requests per client count and configuration")
    parser.add_argument("--rss-requests", type=int, default=5000)
    parser.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--predict-pass", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.predict_pass:
        print(json.dumps(predict_pass(args.predict_pass)))
        return
    started = datetime.datetime.now().astimezone()
    notes = [f"before: {load_line()}"]
    work = Path(tempfile.mkdtemp(prefix="tlzoo-serve-bench-"))
    run_dir = args.run
    if run_dir is None:
        run_dir = work / "run"
        print(f"training {run_dir} with examples/flowers12.json", flush=True)
        subprocess.run([TLZOO, "run", "examples/flowers12.json", "--output", str(run_dir)], check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL)
    paths = test_images()
    images = [(str(p.relative_to(DATA / "test")), p.read_bytes()) for p in paths]

    began = time.perf_counter()
    done = subprocess.run([TLZOO, "predict", str(run_dir), str(DATA / "test"), "--format", "json"],
                          capture_output=True, text=True, check=True)
    predict_wall = time.perf_counter() - began
    reference = {str(Path(item["path"]).relative_to(DATA / "test")): item["top"] for item in json.loads(done.stdout)}
    child = subprocess.run([sys.executable, __file__, "--predict-pass", str(run_dir)], capture_output=True,
                           text=True, check=True)
    passed = json.loads(child.stdout.strip().splitlines()[-1])
    notes.append(f"after predict: {load_line()}")
    print(f"tlzoo predict: {predict_wall:.1f} s whole command; pass {len(paths) / passed['seconds']:.1f} img/s",
          flush=True)

    rows, memory, mismatched = [], {}, []
    for config, extra in CONFIGS.items():
        server = ServerProcess(run_dir, extra)
        try:
            load(server, images, 4, 32)  # warm: connections, allocator, the first batches of each size
            counts = mean_batch(server, (0, 0))[1]
            for clients in CLIENTS:
                result = load(server, images, clients, args.requests)
                result["mean_batch"], counts = mean_batch(server, counts)
                result["config"], result["load"] = config, load_line()
                mismatched += [f"{config}, {clients} clients: {name}" for name, top in result["answers"].items()
                               if top != reference[name]]
                rows.append(result)
                print(f"{config}, {clients:>2} clients: {result['rate']:.1f} img/s, p50 {result['p50']:.0f} ms, "
                      f"p95 {result['p95']:.0f} ms, p99 {result['p99']:.0f} ms, mean batch "
                      f"{result['mean_batch']:.1f}, errors {len(result['errors'])}; {result['load']}", flush=True)
            if config == "batching on":
                prime(server, images)
                memory["before"] = server.memory()
                soak = load(server, images, 16, args.rss_requests)
                memory["after"] = server.memory()
                memory["soak"] = soak
                mismatched += [f"soak: {name}" for name, top in soak["answers"].items() if top != reference[name]]
                print(f"{args.rss_requests} requests: RSS {memory['before']} -> {memory['after']} MiB, "
                      f"{soak['rate']:.1f} img/s, errors {len(soak['errors'])}", flush=True)
        finally:
            code = server.stop()
            if code != 0:
                raise SystemExit(f"the server exited {code} on SIGTERM:\n" + "".join(server.lines[-20:]))
    notes.append(f"after: {load_line()}")
    text = section(started, run_dir, passed, predict_wall, len(paths), rows, memory, mismatched, notes, args)
    print(text)
    if not args.no_append:
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write(text)
        print(f"appended to {RESULTS}")


def section(started, run_dir, passed, predict_wall, count, rows, memory, mismatched, notes, args) -> str:
    lines = [f"\n## {started:%Y-%m-%d %H:%M %Z}: `tlzoo serve` under load (benchmarks/serve_bench.py)\n",
             f"{cpu_line()} Run {run_dir} (examples/flowers12.json), precision path {passed['precision']}. "
             f"Loopback, server and load generator on the same {os.cpu_count()} cores; one flowers12 test JPEG "
             f"per request, {args.requests} requests per row, keep-alive connections; latency from sending a "
             f"request to its whole answer. Load: {'; '.join(notes)}.\n",
             f"- `tlzoo predict RUN_DIR test/` on the same {count} files: {predict_wall:.1f} s for the whole command "
             f"(start, model load, {count} images); predict() alone with the model loaded: "
             f"{count / passed['seconds']:.1f} img/s (best of 2).",
             "", "| server | clients | img/s | p50 ms | p95 ms | p99 ms | images per pass | errors | load (1, 5, 15 min) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['clients']} | {r['rate']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | "
                     f"{r['p99']:.0f} | {r['mean_batch']:.1f} | {len(r['errors'])} | "
                     f"{r['load'].replace('load average ', '')} |")
    on = {r["clients"]: r for r in rows if r["config"] == "batching on"}
    ratio = on[16]["rate"] / on[1]["rate"]
    errors = sum(len(r["errors"]) for r in rows) + len(memory["soak"]["errors"])
    before, after = memory["before"], memory["after"]
    lines += ["", "| target | result | figures |", "|---|---|---|",
              f"| 16 clients >= 1.5x one client's img/s (batching on) | {'PASS' if ratio >= 1.5 else 'FAIL'} | "
              f"{on[16]['rate']:.1f} vs {on[1]['rate']:.1f} img/s ({ratio:.2f}x) |",
              f"| zero errors | {'PASS' if errors == 0 else 'FAIL'} | {errors} of "
              f"{sum(r['requests'] for r in rows) + memory['soak']['requests']} requests |",
              f"| answers identical to `tlzoo predict` | {'PASS' if not mismatched else 'FAIL'} | "
              f"{len(mismatched)} answers differ (every class and probability compared) |",
              f"| peak RSS after {memory['soak']['requests']} requests within {PEAK_NOISE:.0%} of before | "
              f"{'PASS' if after['peak'] <= before['peak'] * (1 + PEAK_NOISE) else 'FAIL'} | "
              f"{before['peak']:.0f} -> {after['peak']:.0f} MiB ({after['peak'] - before['peak']:+.0f}) |",
              "",
              f"- Memory, batching on: after the rows above and one batch of each size up to 32, RSS "
              f"{before['rss']:.0f} MiB (peak "
              f"{before['peak']:.0f}); after {memory['soak']['requests']} more requests at 16 clients "
              f"({memory['soak']['rate']:.1f} img/s) RSS {after['rss']:.0f} MiB (peak {after['peak']:.0f}): "
              f"{after['rss'] - before['rss']:+.0f} MiB."]
    if mismatched:
        lines.append("- Differing answers: " + ", ".join(mismatched[:10]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
