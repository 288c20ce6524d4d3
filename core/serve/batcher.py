"""Dynamic batching: images of concurrent requests share one forward pass.

One thread owns the model. It takes the oldest waiting image, then gathers more
until the batch holds `max_batch` or the oldest has waited `max_wait` seconds,
and scores them together (the predictor's `score`, as `tlzoo predict` does).
It waits only while more is on its way: a request being read or decoded
counts as arriving, and with nothing queued and nothing arriving the batch
goes at once, so a lone client never pays `max_wait`.
An image whose request was abandoned (client gone, request cancelled) is
dropped before the pass. The first job is a warm-up batch; GET /health says
ready after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from tlzoo.serve.metrics import Metrics

_STOP = object()


@dataclass
class _Item:
    row: object
    top_k: int
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(self, predictor, max_batch: int, max_wait: float, metrics: Metrics, log=print):
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.metrics = metrics
        self.log = log
        self.queue: queue.Queue = queue.Queue()
        self.ready = threading.Event()
        self.failed: str | None = None  # why the warm-up batch failed
        self.arriving = 0  # requests being read or decoded (only the event loop changes it)
        self.thread = threading.Thread(target=self._work, name="tlzoo-serve-batcher", daemon=True)

    def start(self, warm_up_row) -> None:
        self.thread.start()
        self.queue.put(_Item(warm_up_row, 1))

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then end the thread."""
        self.queue.put(_STOP)
        self.thread.join(timeout)

    @contextlib.contextmanager
    def arrival(self):
        """Around reading and decoding a request: batches being gathered wait for it."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    def submit(self, rows: list, top_k: int) -> list[_Item]:
        """Queue `rows` (prepared images); they may share passes with other requests' images."""
        items = [_Item(row, top_k) for row in rows]
        for item in items:
            self.queue.put(item)
        return items

    async def results(self, items: list[_Item]) -> list:
        """The predictions of submitted items, in order."""
        try:
            return list(await asyncio.gather(*(asyncio.wrap_future(item.future) for item in items)))
        finally:
            for item in items:
                item.future.cancel()  # a no-op once done; an abandoned request's images skip the pass

    def _work(self) -> None:
        warm = self._next_batch()
        if warm is not None:
            self._warm_up(warm)
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _warm_up(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        try:
            self.predictor.score([batch[0].row], [1])
        except Exception as exc:  # noqa: BLE001 - reported by /health and the server, which stops
            self.failed = f"{type(exc).__name__}: {exc}"
        else:
            self.log(f"warm-up batch answered in {time.perf_counter() - started:.2f} s")
        self.ready.set()
        self._run(batch[1:])  # requests that came during the warm-up

    def _next_batch(self) -> list[_Item] | None:
        """Up to max_batch live items, the first waited for; None once stopped and drained."""
        first = self.queue.get()
        if first is _STOP:
            return None
        batch = [first]
        deadline = first.queued + self.max_wait
        while len(batch) < self.max_batch:
            if self.queue.empty() and not self.arriving:
                break  # nothing is coming: waiting would only add latency
            try:
                item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                self.queue.put(_STOP)  # end after this batch
                break
            batch.append(item)
        return batch

    def _run(self, batch: list[_Item]) -> None:
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        if self.failed:
            for item in live:
                item.future.set_exception(RuntimeError(f"the model failed its warm-up batch: {self.failed}"))
            return
        try:
            predictions = self.predictor.score([item.row for item in live], [item.top_k for item in live])
        except Exception as exc:  # noqa: BLE001 - the requests get a 500; the thread serves the next batch
            for item in live:
                item.future.set_exception(exc)
            return
        self.metrics.batch(len(live))
        for item, prediction in zip(live, predictions):
            item.future.set_result(prediction)
