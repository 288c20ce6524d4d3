"""Run loggers: plugins that hear a run's start, each epoch's metrics and its end.

A logger component's `build(options, run_dir)` returns an object with these
three methods (the `RunLogger` protocol). The spec always holds the `metrics`
logger (metrics.jsonl and metrics.csv, tlzoo.spec adds it): the run
directory's own record of the epochs, which the report reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from tlzoo.errors import TlzooError


@runtime_checkable
class RunLogger(Protocol):
    def start(self, spec: dict, classes: list[str]) -> None:
        """Before the first epoch: the resolved spec (as in spec.json) and the class names."""

    def epoch(self, metrics: dict) -> None:
        """After each epoch: its record, as in metrics.jsonl."""

    def end(self, summary: dict, best_path: Path | None) -> None:
        """After the last epoch: summary.json's content and the best checkpoint (None when none was saved)."""


class Loggers:
    """The run's loggers, called in spec order; a failing one is named with its plugin."""

    def __init__(self, built: list[tuple[object, RunLogger]]):
        self.built = built  # (ResolvedComponent, logger)

    def _call(self, method: str, *args) -> None:
        for ref, logger in self.built:
            try:
                getattr(logger, method)(*args)
            except TlzooError:
                raise
            except Exception as exc:
                raise TlzooError(f"logger {ref.name!r} (plugin {ref.component.plugin!r}) failed in {method}(): "
                                 f"{type(exc).__name__}: {exc}",
                                 "fix or uninstall the plugin, or remove the logger from the spec's 'loggers'") from exc

    def start(self, spec: dict, classes: list[str]) -> None:
        self._call("start", spec, classes)

    def epoch(self, metrics: dict) -> None:
        self._call("epoch", metrics)

    def end(self, summary: dict, best_path: Path | None) -> None:
        self._call("end", summary, best_path)


def build_loggers(refs: list, run_dir: Path) -> Loggers:
    """Build each resolved logger component for `run_dir`; the result must have start, epoch and end."""
    built = []
    for ref in refs:
        logger = ref.build(Path(run_dir))
        if not isinstance(logger, RunLogger):
            raise TlzooError(f"logger {ref.name!r} (plugin {ref.component.plugin!r}) built a "
                             f"{type(logger).__name__}, which lacks start(), epoch() or end()",
                             "a logger's build(options, run_dir) returns an object with all three methods")
        built.append((ref, logger))
    return Loggers(built)
