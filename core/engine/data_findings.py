"""A data set's findings (tlzoo.findings) from the pretrained backbone's pooled features, for `tlzoo inspect`
and for the report at the end of a run.

The features are those of the spec's backbone and weights as a head_only run
without augmentation sees them (tlzoo.engine.features.frozen_view): the probe
must not have been trained on the labels it checks, so a fine-tuned backbone is
never used. A head_only run with `augment: "none"` left exactly these entries in
the activation cache; another run costs one feature pass over its images (and
leaves the entries for the next).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlzoo.engine.features import frozen_view, pooled_features
from tlzoo.errors import TlzooError
from tlzoo.findings.find import SplitData, find_issues
from tlzoo.findings.issues import Findings, findings_json, issues_csv
from tlzoo.rundir import outputs
from tlzoo.rundir.writing import atomic_write
from tlzoo.runtime.device import one_thread

FINDINGS_FILE = "findings.json"
ISSUES_FILE = "issues.csv"


def data_findings(resolved, data, log, names: dict[str, str] | None = None) -> Findings:
    """Findings of `data` (a LabelledData) under `resolved`'s backbone; `names` renames splits (a split named
    like another is merged into it)."""
    names = names or {}
    if resolved.spec.backbone.weights == "none":
        raise TlzooError(f"backbone {resolved.backbone.name!r} has weights 'none': random features say nothing "
                         "about the labels or the images", "use pretrained weights (backbone.weights or --backbone)")
    features = pooled_features(frozen_view(resolved), data, log, with_test=True)
    splits = [_split(names.get("train", "train"), data.train, features.train_y, features.train_x, data.hashes),
              _split(names.get("val", "val"), data.val, features.val_y, features.val_x, data.hashes)]
    if features.test_x is not None:
        splits.append(_split(names.get("test", "test"), data.test, features.test_y, features.test_x, data.hashes))
    with one_thread():
        return find_issues(splits, data.classes)


def _split(name: str, items, labels, features, known_hashes: dict) -> SplitData:
    """One split's SplitData, with the hashes the scan computed when it saw every one of its files."""
    paths = [path for path, _ in items]
    known = paths and all(p in known_hashes for p in paths)
    hashes = np.array([known_hashes[p] for p in paths], dtype=np.uint64) if known else None
    return SplitData(name, paths, labels, features, hashes)


def summary_line(findings: Findings) -> str:
    counts = findings.counts()
    return (f"{counts['mislabelled']} likely mislabelled, {counts['leak']} leak(s) across splits, "
            f"{counts['duplicate']} duplicate pair(s) within a split, {counts['outlier']} outlier(s), "
            f"{counts['small_class']} small class(es) in {sum(findings.splits.values())} images "
            f"({findings.seconds:.1f} s)")


def write_findings(folder: Path, findings: Findings) -> None:
    """findings.json (for the report) and issues.csv (for the user) in `folder` (a full disk is a TlzooError)."""
    atomic_write(Path(folder) / FINDINGS_FILE, findings_json(findings).encode())
    atomic_write(Path(folder) / ISSUES_FILE, issues_csv(findings).encode())


def read_findings(folder: Path) -> Findings | None:
    """The findings a run wrote, or None when it wrote none (report.findings off, an older run)."""
    path = Path(folder) / FINDINGS_FILE
    if not path.is_file():
        return None
    try:
        return Findings.from_json(outputs.read_json(path, "data findings"))
    except (TypeError, KeyError) as exc:
        raise TlzooError(f"{path}: not a findings file tlzoo wrote ({exc})",
                         "delete it, or run tlzoo inspect on the run's spec") from None
