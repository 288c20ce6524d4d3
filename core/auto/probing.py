"""Step 2 of `tlzoo train`'s search (tlzoo.auto.search): each candidate backbone that the budget pays for gets
`rank`'s linear probe on its pooled features, cheapest first, and the best probe chooses the backbone."""

from __future__ import annotations

import torch

from tlzoo.auto import estimates
from tlzoo.auto.decisions import Row
from tlzoo.auto.recipes import DEFAULT_LR, HEAD_EPOCHS, Recipe, candidate_spec
from tlzoo.auto.search import FINETUNE_GROUPS, Search
from tlzoo.auto.throughput import Speed
from tlzoo.auto.timing import suggest_minutes
from tlzoo.engine.features import pooled_features
from tlzoo.errors import TlzooError
from tlzoo.probe.scores import linear_probe
from tlzoo.runtime.device import one_thread


def probe_candidates(search: Search, speeds: list[Speed]) -> list[tuple[Speed, object, int]]:
    """(speed, features, correct validation images) of each candidate probed, cheapest first."""
    probed = []
    for speed in sorted(speeds, key=lambda s: (estimates.probe_s(s, search.sizes), s.backbone)):
        raw = estimates.probe_s(speed, search.sizes)
        estimate = search.scaled(raw)
        reserve = search.scaled(max([estimates.final_head_s(s, search.sizes, HEAD_EPOCHS) for s, _, _ in probed]
                                    + [estimates.final_head_s(speed, search.sizes, HEAD_EPOCHS)]))
        kept_for = "the final run"
        cheapest, own = finetune_start(search, probed[0][0]) if probed else None, finetune_start(search, speed)
        if cheapest is not None and own is not None and search.budget.affords(cheapest) and own > reserve:
            reserve, kept_for = own, (f"a top-2 fine-tune of {speed.backbone}, should it win, to start: "  # search, step 2
                                      "its prefix pass, first epoch and final run")
        if not search.budget.affords(estimate, reserve):
            search.decisions.add(Row("probe", speed.backbone, None, None, False,
                                     f"not probed: its features and probe need about {estimate:.0f} s; "
                                     f"{max(0.0, search.budget.available() - reserve):.0f} s were left after keeping "
                                     f"{reserve:.0f} s for {kept_for}", estimate))
            search.log(f"{speed.backbone}: not probed (about {estimate:.0f} s; the budget cannot pay for it)")
            continue
        search.budget.charge(estimate)
        search.log(f"probing {speed.backbone} (about {estimate:.0f} s)")
        started = search.budget.elapsed()
        spec = candidate_spec(search.base, speed.backbone, Recipe(0, DEFAULT_LR, HEAD_EPOCHS))
        features = pooled_features(search.resolve(spec), search.data, search.log)
        rows = probe_rows(features.train_y, estimates.PROBE_ROWS, search.base["train"]["seed"])
        with one_thread():
            probe = linear_probe(features.train_x[rows], features.train_y[rows], features.val_x, features.val_y,
                                 features.num_classes)
        correct = round(probe.top1 * search.sizes.val)
        seconds = search.budget.elapsed() - started
        search.observe(raw, seconds)
        probed.append((speed, features, correct))
        row = search.decisions.add(Row("probe", speed.backbone, probe.top1, seconds, False, "", estimate))
        row.reason = f"linear probe (L2 {probe.l2:g}) on pooled features" + (" from the cache" if features.cached
                                                                             else "")
        if len(rows) < len(features.train_y):
            row.reason += f", fitted on a stratified {len(rows)} of the {len(features.train_y)} training images"
        search.log(f"{speed.backbone}: probe top-1 {probe.top1:.4f} ({search.images(correct)}), {seconds:.1f} s")
    return probed


def finetune_start(search: Search, speed: Speed) -> float | None:
    """Seconds a top-2 fine-tune of `speed`'s backbone needs to start (its prefix pass and first epoch) and its
    final run; None for a backbone of too few groups for one."""
    if speed.groups <= FINETUNE_GROUPS[0]:
        return None
    return search.scaled(estimates.finetune_start_s(speed, search.sizes))


def probe_rows(labels: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    """All row indices, or a seeded subset of `limit` that keeps each class's share (each class keeps a row)."""
    if len(labels) <= limit:
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(seed)
    kept = []
    for label in labels.unique():
        rows = (labels == label).nonzero().flatten()
        share = max(1, round(len(rows) * limit / len(labels)))
        kept.append(rows[torch.randperm(len(rows), generator=generator)[:share]])
    return torch.cat(kept).sort().values


def choose_backbone(search: Search, probed) -> tuple[Speed, object, int]:
    """The best probe, unless a cheaper backbone is within one validation image of it."""
    if not probed:
        raise TlzooError("the budget could not pay for probing any backbone (see the estimates above)",
                         f"give more --time, e.g. --time {suggest_minutes(2 * search.budget.seconds)}")
    best = max(probed, key=lambda item: item[2])
    chosen = next(item for item in probed if item[2] >= best[2] - 1)  # probed is cheapest first
    probe_rows = {row.candidate: row for row in search.decisions.rows if row.step == "probe" and row.seconds}
    cost = {speed.backbone: estimates.probe_s(speed, search.sizes) for speed, _, _ in probed}
    for speed, _, correct in probed:
        row = probe_rows[speed.backbone]
        ratio = cost[speed.backbone] / cost[chosen[0].backbone]
        if speed is chosen[0]:
            row.kept = True
            row.reason += ("; best probe" if chosen is best else
                           f"; kept: within one image of the best probe ({best[0].backbone}, "
                           f"{search.images(best[2])}) at {cost[speed.backbone] / cost[best[0].backbone]:.2f}x "
                           "its cost")
        elif correct > chosen[2]:
            row.reason += (f"; dropped: {correct - chosen[2]} image better than {chosen[0].backbone} at "
                           f"{ratio:.1f}x its cost")
        else:
            below = f"{chosen[2] - correct} image(s) below" if correct < chosen[2] else "no better than"
            row.reason += f"; dropped: {below} {chosen[0].backbone}" + (f" at {ratio:.1f}x its cost" if ratio > 1
                                                                         else "")
    search.log(f"backbone: {chosen[0].backbone} ({search.images(chosen[2])} by the probe)")
    return chosen
