"""The error a sample raises when it cannot be loaded or transformed, also from a DataLoader worker.

A worker's exception reaches the main process as text (DataLoader rebuilds it
from the traceback), so the message is taken back out of that text.
"""

from __future__ import annotations

from tlzoo.errors import TlzooError


class SampleError(TlzooError):
    """A sample that failed to load or transform; the message starts with its path."""

    def __init__(self, message: str, hint: str | None = None):
        if message.startswith("Caught SampleError"):
            message = from_worker_text(message)  # DataLoader rebuilds worker errors from their traceback text
        super().__init__(message, hint or "fix or remove the file; 'data.bad_files' only covers files that "
                                          "were bad when the run started")


def from_worker_text(text: str) -> str:
    """The SampleError's own message inside a DataLoader worker's traceback text, its HINT left out."""
    marker = "SampleError: "
    tail = text[text.rfind(marker) + len(marker):] if marker in text else text
    return tail.split("\n  HINT:")[0].strip() + " (in a DataLoader worker)"
