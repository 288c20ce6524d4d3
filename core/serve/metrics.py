"""What GET /metrics says, in Prometheus' text format (version 0.0.4), kept without a client library.

Requests by route and status, request latency and batch sizes as histograms,
images predicted as a counter, and images per second over the last WINDOW
seconds as a gauge (Prometheus' own rate() over the counter is the better
figure where a Prometheus scrapes it).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WINDOW = 10.0  # seconds the images-per-second gauge looks back


class Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
        self.total += 1
        self.sum += value

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {count}'
               for bound, count in zip(self.buckets, self.counts)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        suffix = f"{{{labels}}}" if labels else ""
        return out + [f"{name}_sum{suffix} {self.sum:.6f}", f"{name}_count{suffix} {self.total}"]


class Metrics:
    """Thread-safe: the event loop records requests, the batch thread records batches."""

    def __init__(self, max_batch: int):
        self.lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latency = Histogram(LATENCY_BUCKETS)
        bounds = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256} | {max_batch})
        self.batch_sizes = Histogram(b for b in bounds if b <= max_batch)
        self.images = 0
        self.recent: deque[tuple[float, int]] = deque()  # (time, images) of batches in the window

    def request(self, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(route, status)] += 1
            if route == "/predict":
                self.latency.observe(seconds)

    def batch(self, size: int) -> None:
        now = time.monotonic()
        with self.lock:
            self.batch_sizes.observe(size)
            self.images += size
            self.recent.append((now, size))
            self._forget(now)

    def _forget(self, now: float) -> None:
        while self.recent and self.recent[0][0] < now - WINDOW:
            self.recent.popleft()

    def text(self) -> str:
        with self.lock:
            self._forget(time.monotonic())
            rate = sum(size for _, size in self.recent) / WINDOW
            lines = ["# HELP tlzoo_requests_total HTTP requests answered, by route and status.",
                     "# TYPE tlzoo_requests_total counter"]
            lines += [f'tlzoo_requests_total{{route="{route}",status="{status}"}} {count}'
                      for (route, status), count in sorted(self.requests.items())]
            lines += ["# HELP tlzoo_request_seconds Time to answer POST /predict, from its start to its answer.",
                      "# TYPE tlzoo_request_seconds histogram", *self.latency.lines("tlzoo_request_seconds"),
                      "# HELP tlzoo_batch_size Images in each forward pass.",
                      "# TYPE tlzoo_batch_size histogram", *self.batch_sizes.lines("tlzoo_batch_size"),
                      "# HELP tlzoo_images_total Images predicted.",
                      "# TYPE tlzoo_images_total counter", f"tlzoo_images_total {self.images}",
                      f"# HELP tlzoo_images_per_second Images predicted per second over the last {WINDOW:g} s.",
                      "# TYPE tlzoo_images_per_second gauge", f"tlzoo_images_per_second {rate:.3f}"]
        return "\n".join(lines) + "\n"
