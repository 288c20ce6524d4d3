"""`tlzoo rank`: score several backbones on one spec's data from their frozen, pooled features.

Each backbone gets the spec as a head_only run with `augment: "none"` would see it
(tlzoo.engine.features), one feature pass through the cache, then three scores:
the linear probe's and the kNN's validation top-1 (tlzoo.probe.scores) and LogME
on the training features (tlzoo.probe.logme). The probe is a heuristic for the
accuracy after fine-tuning: published rank correlations of such scores with
fine-tuned accuracy are 0.5-0.8.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from tlzoo.engine.features import pooled_features
from tlzoo.errors import TlzooError
from tlzoo.probe.logme import logme
from tlzoo.probe.scores import KNN_K, knn_top1, linear_probe
from tlzoo.runtime.device import one_thread
from tlzoo.spec import resolve_spec

HONESTY_NOTE = ("probe top-1: logistic regression on frozen pooled features, a heuristic for the accuracy after "
                "fine-tuning (published rank correlations of such scores with it are 0.5-0.8)")


@dataclass
class Candidate:
    name: str
    weights: str  # shipped / cached / download / none, as `tlzoo list backbones` says


@dataclass
class Ranking:
    rows: list[dict] = field(default_factory=list)  # best probe top-1 first
    skipped: list[dict] = field(default_factory=list)  # {"backbone", "reason"}
    knn_k: int = KNN_K

    def to_json(self) -> dict:
        return {"ranked": self.rows, "skipped": self.skipped, "knn_k": self.knn_k, "note": HONESTY_NOTE}


def backbone_name(raw: dict) -> str | None:
    entry = raw.get("backbone")
    return entry if isinstance(entry, str) else entry.get("name") if isinstance(entry, dict) else None


def with_backbone(raw: dict, name: str) -> dict:
    """The spec with `name` as its backbone: the spec's own entry (options, weights) when it names it already."""
    out = copy.deepcopy(raw)
    if backbone_name(raw) != name:
        out["backbone"] = {"name": name, "weights": "pretrained"}
    return out


def probe_spec(raw: dict) -> dict:
    """The spec as a head_only run without augmentation: what the features are computed under."""
    out = copy.deepcopy(raw)
    out.setdefault("train", {})["strategy"] = "head_only"
    out.setdefault("data", {})["augment"] = "none"
    return out


def rank_backbones(raw: dict, base_dir: Path, source: str, registry, candidates: list[Candidate], data,
                   log, offline: bool = False, budget_minutes: float | None = None, knn_k: int = KNN_K) -> Ranking:
    """Score every candidate whose weights can be had; the others are listed in `skipped` with the reason.

    `raw`: the spec as JSON (overrides applied); `data`: its LabelledData, read once for all backbones.
    `budget_minutes`: no backbone starts once this much time has gone (a started one finishes).
    """
    ranking, started = Ranking(knn_k=knn_k), time.perf_counter()
    for candidate in candidates:
        name = candidate.name
        reason = unavailable(candidate, raw, offline)
        if reason is None and budget_minutes is not None and time.perf_counter() - started > budget_minutes * 60:
            reason = f"not started: the --budget of {budget_minutes:g} min was used up"
        if reason is not None:
            ranking.skipped.append({"backbone": name, "reason": reason})
            log(f"rank: {name}: skipped ({reason})")
            continue
        log(f"rank: {name}: features of {len(data.train)} training and {len(data.val)} validation images")
        try:
            resolved = resolve_spec(probe_spec(with_backbone(raw, name)), registry, base_dir, source)
            row = score_backbone(resolved, data, log, knn_k)
        except TlzooError as exc:  # weights that cannot be had here, an option this backbone refuses
            ranking.skipped.append({"backbone": name, "reason": str(exc).splitlines()[0]})
            log(f"rank: {name}: skipped ({str(exc).splitlines()[0]})")
            continue
        ranking.rows.append(row)
        log(f"rank: {name}: probe top-1 {row['probe_top1']:.4f}, kNN top-1 {row['knn_top1']:.4f}, "
            f"LogME {row['logme']:.4f} ({row['seconds']:.1f}s)")
    ranking.rows.sort(key=lambda row: (-row["probe_top1"], -row["logme"], row["backbone"]))
    return ranking


def unavailable(candidate: Candidate, raw: dict, offline: bool) -> str | None:
    own = candidate.name == backbone_name(raw)  # the spec's own entry may name a weights file
    if candidate.weights == "none" and not own:
        return "no pretrained weights (random features rank nothing)"
    if offline and candidate.weights not in ("shipped", "cached") and not own:
        return "--offline: weights are not on this machine (download needed)"
    return None


def score_backbone(resolved, data, log, knn_k: int = KNN_K) -> dict:
    started = time.perf_counter()
    features = pooled_features(resolved, data, log)
    with one_thread():
        probe = linear_probe(features.train_x, features.train_y, features.val_x, features.val_y,
                             features.num_classes)
        knn = knn_top1(features.train_x, features.train_y, features.val_x, features.val_y, features.num_classes,
                       knn_k)
        score = logme(features.train_x, features.train_y, features.num_classes)
    _, height, width = features.input_size
    return {
        "backbone": resolved.backbone.name,
        "weights": features.weights,
        "parameters": features.parameters,
        "input_size": f"{height}x{width}",
        "features": features.train_x.shape[1],
        # the rate of a feature pass; a cached entry was read, not computed, so it has none
        "features_per_s": None if features.cached else features.images / max(features.seconds, 1e-9),
        "cached": features.cached,
        "probe_top1": probe.top1,
        "probe_l2": probe.l2,
        "knn_top1": knn,
        "logme": score,
        "seconds": time.perf_counter() - started,
    }


def write_winner_spec(raw: dict, name: str, base_dir: Path, registry, path: Path) -> None:
    """The user's spec with the winning backbone, checked to resolve, written where `tlzoo run` takes it as it is.

    `base_dir` (the spec's folder) keeps its relative paths pointing where they did.
    """
    out = with_backbone(raw, name)
    out["base_dir"] = str(base_dir)
    resolve_spec(out, registry, base_dir, str(path))
    try:
        path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise TlzooError(f"--write-spec {path}: {exc.strerror}", "pass a path in a writable folder") from None
