"""All findings of one data set from its pooled features: the one call `inspect` and a run's report make."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tlzoo.findings.balance import balance_of, small_class_issues
from tlzoo.findings.duplicates import NEIGHBOUR, duplicate_issues
from tlzoo.findings.hashing import NO_HASH, hash_files
from tlzoo.findings.issues import KINDS, Findings
from tlzoo.findings.mislabelled import mislabelled_issues, weak_probe_note
from tlzoo.findings.outliers import outlier_issues


@dataclass
class SplitData:
    """One split's images in file order: their paths, labels and pooled features."""

    name: str  # 'train', 'val', 'test', or the user's name for it
    paths: list[Path]
    labels: torch.Tensor  # (n,) class indices
    features: torch.Tensor  # (n, D)
    hashes: np.ndarray | None = None  # (n, len(CENTRES)) perceptual hashes when the scan made them; else hashed here


def merged(splits: list[SplitData]) -> list[SplitData]:
    """Splits that share a name become one (a single folder read as train and val is one set of images)."""
    by_name: dict[str, SplitData] = {}
    for split in splits:
        if split.name in by_name:
            first = by_name[split.name]
            both = None if first.hashes is None or split.hashes is None else np.concatenate([first.hashes,
                                                                                             split.hashes])
            by_name[split.name] = SplitData(split.name, list(first.paths) + list(split.paths),
                                            torch.cat([first.labels, split.labels]),
                                            torch.cat([first.features, split.features]), both)
        else:
            by_name[split.name] = SplitData(split.name, list(split.paths), split.labels.long(),
                                            split.features.float(), split.hashes)
    return list(by_name.values())


def find_issues(splits: list[SplitData], classes: list[str], threads: int = 4) -> Findings:
    """Mislabelled images, duplicates and leaks, outliers and small classes; `splits[0]` is the training split."""
    started = time.perf_counter()
    splits = [s for s in merged(splits) if len(s.paths)]
    train = splits[0]
    mean = train.features.mean(0)
    hashes = [s.hashes if s.hashes is not None else hash_files(s.paths, threads) for s in splits]
    unhashed = sum(int((h[:, 0] == NO_HASH).sum()) for h in hashes)
    mislabelled, settings = mislabelled_issues(splits, classes)
    outliers, outlier_settings = outlier_issues(splits, classes)
    duplicates, duplicate_settings = duplicate_issues(splits, classes, mean, hashes, threads)
    balance = balance_of(splits, classes)
    issues = mislabelled + duplicates + outliers + small_class_issues(balance, train.name)
    issues.sort(key=lambda issue: KINDS.index(issue.kind))  # stable: each kind keeps its own order
    settings.update(outlier_settings)
    settings.update(duplicate_settings)
    notes = [f"{unhashed} image(s) could not be decoded for the perceptual hash: only their features compared"
             ] if unhashed else []
    notes += weak_probe_note(settings)
    if not duplicate_settings["features_used"]:
        notes.append(f"the backbone's features hardly tell these images apart (an image's {NEIGHBOUR}th nearest "
                     f"neighbour has cosine {duplicate_settings['median_neighbour_cosine']:.3f}): duplicates were "
                     "found by their pixels alone, and outliers mean little")
    return Findings(issues, balance, {s.name: len(s.paths) for s in splits}, settings, notes,
                    time.perf_counter() - started)
