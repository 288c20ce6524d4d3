"""The bad-file policy: `data.bad_files` and `data.max_bad_fraction` applied to what the scan found."""

from __future__ import annotations

from tlzoo.errors import TlzooError
from tlzoo.data.problem_list import listed
from tlzoo.data.samples import Problem


MAX_BAD_FRACTION = 0.01  # the spec's defaults (data.max_bad_fraction, data.tolerated_bad_files)
TOLERATED_BAD_FILES = 5


class TooManyBadFiles(TlzooError):
    """More bad inputs than the policy skips: `count` of `total`, above `max_fraction` and `tolerated`;
    `listing` names each with its reason."""

    def __init__(self, message: str, hint: str, count: int, total: int, listing: str, max_fraction: float,
                 tolerated: int):
        super().__init__(message, hint)
        self.count, self.total, self.listing = count, total, listing
        self.max_fraction, self.tolerated = max_fraction, tolerated


def check_bad_files(problems: list[Problem], total: int, bad_files: str, max_bad_fraction: float,
                    tolerated: int = 0) -> None:
    """Raise TlzooError when the bad inputs must stop the run: 'error', or more than the allowed fraction of
    `total` and more than `tolerated` of them (a floor, so one broken file never stops a small data set)."""
    lines = [f"{problem.origin}: {problem.reason}" for problem in problems]
    if bad_files == "error":
        raise TlzooError(f"{len(problems)} bad input(s) found before training (data.bad_files is 'error'):\n"
                         + listed(lines), "fix or remove them, or set data.bad_files to 'skip'")
    fraction = len(problems) / max(total, 1)
    if fraction > max_bad_fraction and len(problems) > tolerated:
        raise TooManyBadFiles(
            f"{len(problems)} of {total} inputs ({fraction:.1%}) are bad, more than data.max_bad_fraction "
            f"({max_bad_fraction:.1%}) and more than data.tolerated_bad_files ({tolerated}); training did not "
            "start:\n" + listed(lines),
            "fix or remove the files, or raise data.max_bad_fraction (or data.tolerated_bad_files) if skipping "
            "them is fine", len(problems), total, listed(lines), max_bad_fraction, tolerated)
