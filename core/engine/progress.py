"""Progress reporting: rich bars on a terminal; otherwise a line per epoch and one every few seconds inside it."""

from __future__ import annotations

import sys

from tlzoo.runtime.heartbeat import Heartbeat, eta


def format_metrics(record: dict) -> str:
    parts = [f"epoch {record['epoch']}/{record['epochs']}"]
    for key in ("train_loss", "val_loss", "val_top1", "val_top5"):
        value = record.get(key)
        if value is not None:
            parts.append(f"{key} {value:.4f}")
    parts.append("lr " + ",".join(f"{lr:.2g}" for lr in sorted(set(record["lr"]))))
    parts.append(f"trainable {record['trainable_params']:,}")
    parts.append(f"{record['seconds']:.1f}s")
    if record.get("is_best"):
        parts.append("best")
    return "  ".join(parts)


class LineStream:
    """A text stream that hands each complete line to `on_line`: progress written under another's log."""

    def __init__(self, on_line):
        self.on_line, self.pending = on_line, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.on_line(line)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class PlainProgress:
    """For logs and pipes: a line at the end of every epoch, and one every few seconds inside it
    (tlzoo.runtime.heartbeat; TLZOO_PROGRESS_SECONDS)."""

    def __init__(self, stream=None, clock=None):
        self.stream = stream or sys.stderr
        self.clock = clock  # None: the heartbeat's own monotonic clock
        self.heartbeat: Heartbeat | None = None
        self.where = ""
        self.loss_total = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start_epoch(self, epoch: int, epochs: int, batches: int, description: str) -> None:
        kwargs = {} if self.clock is None else {"clock": self.clock}
        self.heartbeat = Heartbeat(self.message, batches, **kwargs)
        self.where, self.loss_total = f"epoch {epoch + 1}/{epochs} {description}", 0.0

    def advance(self, loss: float) -> None:
        if self.heartbeat is None:
            return
        self.loss_total += loss
        self.heartbeat.advance(1, lambda done, total, seconds: (
            f"{self.where}: batch {done}/{total}, loss {loss:.4f} (mean {self.loss_total / done:.4f}), "
            f"{eta(done, total, seconds)}"))

    def end_epoch(self, record: dict) -> None:
        self.message(format_metrics(record))


class RichProgress(PlainProgress):
    """An epochs bar and a batches bar; epoch lines are printed above them."""

    def __init__(self, epochs: int, stream=None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        super().__init__(stream)
        self.console = Console(file=self.stream)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                 console=self.console, transient=True)
        self.epochs_task = self.progress.add_task("epochs", total=epochs, info="")
        self.batch_task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def start_epoch(self, epoch: int, epochs: int, batches: int, description: str) -> None:
        if self.batch_task is not None:
            self.progress.remove_task(self.batch_task)
        self.batch_task = self.progress.add_task(f"epoch {epoch + 1} {description}", total=batches, info="")

    def advance(self, loss: float) -> None:
        if self.batch_task is not None:
            self.progress.update(self.batch_task, advance=1, info=f"loss {loss:.4f}")

    def end_epoch(self, record: dict) -> None:
        self.progress.update(self.epochs_task, advance=1)
        super().end_epoch(record)


def make_progress(epochs: int, stream=None) -> PlainProgress:
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return RichProgress(epochs, stream)
    return PlainProgress(stream)
