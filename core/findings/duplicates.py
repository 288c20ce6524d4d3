"""Near-duplicate pairs, within a split and across splits (leaks), from pixels and from features.

Two kinds of evidence, each cheap for every pair:
- pixels: the perceptual hashes of tlzoo.findings.hashing. Resized and re-encoded
  copies, and copies cropped by a few per cent a side around the centre, differ in
  a few of the 63 bits; unrelated images in about 28.
- features: the cosine similarity of the pooled features after subtracting the
  training mean (without centring, every pair of photos looks alike). A copy
  cropped off-centre or flipped keeps its content, and so its features. How close
  "close" is depends on the backbone and the data (coarse features make every
  image of a class alike), so a cosine is read against m, the median over the
  training images of their nearest neighbour's cosine: closeness (cos - m) / (1 - m)
  is 0 for a typical nearest neighbour and 1 for identical features.
A pair is reported when the pixels are decisive (PIXEL_BITS or fewer bits) and the
features do not contradict them (closeness at least PIXEL_CLOSENESS: on clean
flowers12 a yellow iris and a pansy came within 8 bits, at cosine 0.03), when the
features alone are (closeness FEATURE_CLOSENESS or more), or when both agree
moderately (SUPPORT_CLOSENESS and SUPPORT_BITS: each alone is common enough among
distinct images of one class, both together are not). With lite0 on flowers12
(m = 0.65) the feature cuts are cosines 0.48, 0.90 and 0.80. Where m is above
DEGENERATE the features hardly tell one image from another (a backbone that sees
only colour, say) and the pixels decide alone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tlzoo.findings.hashing import hash_distances
from tlzoo.findings.issues import Issue

PIXEL_BITS = 8
PIXEL_CLOSENESS = -0.5  # a resized, re-encoded copy stays far above this: a typical neighbour is at 0
FEATURE_CLOSENESS = 0.7
SUPPORT_CLOSENESS = 0.42
SUPPORT_BITS = 12  # of 63: 1 in 11,000 pairs of distinct flowers12 images comes this close (16: 1 in 400, and
# two different daisies, white petals round a yellow disc, at cosine 0.85)
DEGENERATE = 0.95  # typical nearest-neighbour cosine above which features are not used
BLOCK = 1024  # rows compared at once: memory stays BLOCK x n


def typical_neighbour(train: torch.Tensor) -> float:
    """m: the median over the (normalised) training rows of their nearest other row's cosine."""
    if train.shape[0] < 2:
        return 0.0
    nearest = []
    for start in range(0, train.shape[0], BLOCK):
        similarity = train[start:start + BLOCK] @ train.T
        rows = torch.arange(similarity.shape[0])
        similarity[rows, rows + start] = -2.0
        nearest.append(similarity.max(1).values)
    return float(torch.cat(nearest).median())


def cosine_cuts(typical: float) -> tuple[float, float, float]:
    """(pixels' sanity cut, features-alone cut, together-with-pixels cut) on the cosine, for a typical nearest
    neighbour `typical`; when the features cannot tell images apart, the pixels decide alone."""
    if typical > DEGENERATE:
        return -2.0, 2.0, 2.0
    typical = max(typical, 0.0)
    return tuple(typical + closeness * (1 - typical)
                 for closeness in (PIXEL_CLOSENESS, FEATURE_CLOSENESS, SUPPORT_CLOSENESS))


def candidate_pairs(vectors: torch.Tensor, hashes: np.ndarray,
                    cuts: tuple[float, float, float]) -> dict[tuple[int, int], tuple[float, int]]:
    """{(i, j), i < j: (cosine, bits)} for every pair that passes one of the rules."""
    found = {}
    n = vectors.shape[0]
    pixel_cut, feature_cut, support_cut = cuts
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        cosine = (vectors[start:stop] @ vectors.T).numpy()
        bits = hash_distances(hashes[start:stop], hashes)
        keep = (((bits <= PIXEL_BITS) & (cosine >= pixel_cut)) | (cosine >= feature_cut)
                | ((cosine >= support_cut) & (bits <= SUPPORT_BITS)))
        rows, columns = np.nonzero(keep)
        for row, column in zip(rows.tolist(), columns.tolist()):
            i = start + row
            if i < column:
                found[(i, column)] = (float(cosine[row, column]), int(bits[row, column]))
    return found


def evidence(cosine: float, bits: int, feature_cut: float) -> str:
    pixels = bits <= PIXEL_BITS
    features = cosine >= feature_cut
    how = "pixels and features" if pixels and features else "pixels" if pixels else "features" if features \
        else "pixels and features together"
    return f"{how}: hash {bits} of 63 bits apart, feature cosine {cosine:.3f}"


def duplicate_issues(splits, classes: list[str], mean: torch.Tensor,
                     hashes: list[np.ndarray]) -> tuple[list[Issue], dict]:
    """A 'leak' per pair across two splits, a 'duplicate' per pair inside one (leaks first, closest first), and
    the settings used.

    `mean`: the training features' mean (subtracted before the cosine); `hashes`: each split's (n, 3) hashes.
    """
    vectors = F.normalize(torch.cat([s.features for s in splits]) - mean, dim=1)
    typical = typical_neighbour(vectors[:len(splits[0].paths)])
    cuts = cosine_cuts(typical)
    owner = [(s, row) for s in splits for row in range(len(s.paths))]
    issues = []
    for (i, j), (cosine, bits) in candidate_pairs(vectors, np.concatenate(hashes), cuts).items():
        (a, row_a), (b, row_b) = owner[i], owner[j]
        label_a, label_b = classes[int(a.labels[row_a])], classes[int(b.labels[row_b])]
        # score: 1 for a pixel copy, falling with the bits apart and with the feature distance
        score = max(1.0 - bits / 63, cosine)
        detail = evidence(cosine, bits, cuts[1]) + ("" if label_a == label_b else f"; labelled {label_a} and {label_b}")
        issues.append(Issue("leak" if a.name != b.name else "duplicate", str(a.paths[row_a]), a.name, label_a,
                            score, detail, other_path=str(b.paths[row_b]), other_split=b.name,
                            other_label=label_b))
    issues.sort(key=lambda issue: (issue.kind != "leak", -issue.score, issue.path))
    used = typical <= DEGENERATE
    return issues, {"duplicate_pixel_bits": PIXEL_BITS, "duplicate_support_bits": SUPPORT_BITS,
                    "typical_neighbour_cosine": round(typical, 4),
                    "duplicate_pixel_cosine": round(cuts[0], 4) if used else None,
                    "duplicate_feature_cosine": round(cuts[1], 4) if used else None,
                    "duplicate_support_cosine": round(cuts[2], 4) if used else None}
