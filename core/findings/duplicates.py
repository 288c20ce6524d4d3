"""Near-duplicate pairs, within a split and across splits (leaks), from pixels and from features.

Two kinds of evidence, each cheap for every pair:
- pixels: the perceptual hashes of tlzoo.findings.hashing. Resized and re-encoded
  copies, and copies cropped by up to 10 % a side around the centre, differ in a
  few of the 63 bits; unrelated images in about 32.
- features: the cosine similarity of the pooled features after subtracting the
  training mean (without centring, every pair of photos looks alike). A copy
  cropped off-centre or flipped keeps its content, and so its features.
A pair is reported when the pixels alone are decisive (PIXEL_BITS or fewer bits),
the features alone are (FEATURE_COSINE or more), or both agree moderately
(SUPPORT_COSINE and SUPPORT_BITS: each alone is common enough among distinct
images of one class; both together are not).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tlzoo.findings.hashing import hash_distances
from tlzoo.findings.issues import Issue

PIXEL_BITS = 8
FEATURE_COSINE = 0.90
SUPPORT_COSINE = 0.80
SUPPORT_BITS = 20  # of 63: unrelated hashes come this close about once in 700 pairs
BLOCK = 1024  # rows compared at once: memory stays BLOCK x n


def candidate_pairs(vectors: torch.Tensor, hashes: np.ndarray) -> dict[tuple[int, int], tuple[float, int]]:
    """{(i, j), i < j: (cosine, bits)} for every pair that passes one of the rules."""
    found = {}
    n = vectors.shape[0]
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        cosine = (vectors[start:stop] @ vectors.T).numpy()
        bits = hash_distances(hashes[start:stop], hashes)
        keep = (bits <= PIXEL_BITS) | (cosine >= FEATURE_COSINE) | ((cosine >= SUPPORT_COSINE) & (bits <= SUPPORT_BITS))
        rows, columns = np.nonzero(keep)
        for row, column in zip(rows.tolist(), columns.tolist()):
            i = start + row
            if i < column:
                found[(i, column)] = (float(cosine[row, column]), int(bits[row, column]))
    return found


def evidence(cosine: float, bits: int) -> str:
    pixels = bits <= PIXEL_BITS
    features = cosine >= FEATURE_COSINE
    how = "pixels and features" if pixels and features else "pixels" if pixels else "features" if features \
        else "pixels and features together"
    return f"{how}: hash {bits} of 63 bits apart, feature cosine {cosine:.3f}"


def duplicate_issues(splits, classes: list[str], mean: torch.Tensor, hashes: list[np.ndarray]) -> list[Issue]:
    """A 'leak' per pair across two splits, a 'duplicate' per pair inside one; leaks first, closest first.

    `mean`: the training features' mean (subtracted before the cosine); `hashes`: each split's (n, 3) hashes.
    """
    vectors = F.normalize(torch.cat([s.features for s in splits]) - mean, dim=1)
    owner = [(s, row) for s in splits for row in range(len(s.paths))]
    issues = []
    for (i, j), (cosine, bits) in candidate_pairs(vectors, np.concatenate(hashes)).items():
        (a, row_a), (b, row_b) = owner[i], owner[j]
        label_a, label_b = classes[int(a.labels[row_a])], classes[int(b.labels[row_b])]
        # score: 1 for a pixel copy, falling with the bits apart and with the feature distance
        score = max(1.0 - bits / 63, cosine)
        detail = evidence(cosine, bits) + ("" if label_a == label_b else f"; labelled {label_a} and {label_b}")
        issues.append(Issue("leak" if a.name != b.name else "duplicate", str(a.paths[row_a]), a.name, label_a,
                            score, detail, other_path=str(b.paths[row_b]), other_split=b.name,
                            other_label=label_b))
    issues.sort(key=lambda issue: (issue.kind != "leak", -issue.score, issue.path))
    return issues
