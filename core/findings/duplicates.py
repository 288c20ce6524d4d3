"""Near-duplicate pairs, within a split and across splits (leaks), from pixels and from features.

Two kinds of evidence, each cheap for every pair:
- pixels: the perceptual hashes of tlzoo.findings.hashing. Resized and re-encoded
  copies, and copies cropped by a few per cent a side around the centre, differ in
  a few of the 63 bits; unrelated images in about 28.
- features: the cosine similarity of the pooled features after subtracting the
  training mean (without centring, every pair of photos looks alike). A copy
  cropped off-centre or flipped keeps its content, and so its features. How close
  "close" is depends on the backbone and on the neighbourhood (to efficientnet_lite2
  every daisy photo looks much like every other), so a cosine is read against m,
  the larger of the two images' cosines to their NEIGHBOUR-th nearest training
  image: closeness (cos - m) / (1 - m) is 0 for an ordinary neighbour of either
  image and 1 for identical features. A handful of copies of one image does not
  move its NEIGHBOUR-th neighbour.
A pair is reported when the pixels are decisive (PIXEL_BITS or fewer bits) and the
features do not contradict them (closeness at least PIXEL_CLOSENESS: on clean
flowers12 a yellow iris and a pansy came within 8 bits, at cosine 0.03), when the
features alone are (closeness FEATURE_CLOSENESS or more), or when both agree
moderately (SUPPORT_CLOSENESS and SUPPORT_BITS: each alone is common enough among
distinct images of one class, both together are not). Where the median m of the
training images is above DEGENERATE the features hardly tell one image from
another (a backbone that sees only colour, say) and the pixels decide alone.

A hash match the features do not back (closeness under SUPPORT_CLOSENESS) is
checked on the pixels (tlzoo.findings.hashing.pixel_agreement): the grey images
the hashes came from must correlate at PIXEL_AGREEMENT or more. Grey and
half-size copies of flowers12 photos kept 0.988 and more (18 planted) while their
features moved (closeness down to -0.43); a 64-pixel texture and its 48-pixel
copy, 0.97 and more. Unrelated drawn letters on gradients, drawn shapes and
8-pixel digit scans, within 8 bits of each other by the hundred, mostly fell
below it: 11 of 263, 2 of 43, 2 of 55 and 77 of 676 were left (some digits
are as alike as copies at 8 pixels).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tlzoo.findings.hashing import hash_distances, pixel_agreement
from tlzoo.findings.issues import Issue

PIXEL_BITS = 8
PIXEL_CLOSENESS = -0.5  # a resized, re-encoded copy stays far above this: a typical neighbour is at 0
FEATURE_CLOSENESS = 0.7
SUPPORT_CLOSENESS = 0.42
SUPPORT_BITS = 12  # of 63: 1 in 11,000 pairs of distinct flowers12 images comes this close (16: 1 in 400, and
# two different daisies, white petals round a yellow disc, at cosine 0.85)
PIXEL_AGREEMENT = 0.96  # correlation of grey thumbnails a hash match needs without the features' support
DEGENERATE = 0.95  # median m above which features are not used
NEIGHBOUR = 5
BLOCK = 1024  # rows compared at once: memory stays BLOCK x n


def neighbour_cosines(vectors: torch.Tensor, train_count: int, k: int = NEIGHBOUR) -> torch.Tensor:
    """(n,) each (normalised) row's cosine to its k-th nearest of the first `train_count` rows, itself left out."""
    k = min(k, train_count - 1)
    if k < 1:
        return torch.zeros(vectors.shape[0])
    train, out = vectors[:train_count], []
    for start in range(0, vectors.shape[0], BLOCK):
        similarity = vectors[start:start + BLOCK] @ train.T
        own = torch.arange(start, start + similarity.shape[0])
        inside = own < train_count
        similarity[inside.nonzero().flatten(), own[inside]] = -2.0
        out.append(similarity.topk(k, dim=1).values[:, -1])
    return torch.cat(out)


def candidate_pairs(vectors: torch.Tensor, hashes: np.ndarray, local: np.ndarray,
                    use_features: bool = True) -> dict[tuple[int, int], tuple[float, int, float]]:
    """{(i, j), i < j: (cosine, bits, closeness)} for every pair that passes one of the rules; `local` holds each
    row's m."""
    found = {}
    n = vectors.shape[0]
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        cosine = (vectors[start:stop] @ vectors.T).numpy()
        bits = hash_distances(hashes[start:stop], hashes)
        typical = np.clip(np.maximum(local[start:stop, None], local[None, :]), 0.0, 0.999)
        closeness = (cosine - typical) / (1 - typical)
        if use_features:
            keep = (((bits <= PIXEL_BITS) & (closeness >= PIXEL_CLOSENESS)) | (closeness >= FEATURE_CLOSENESS)
                    | ((closeness >= SUPPORT_CLOSENESS) & (bits <= SUPPORT_BITS)))
        else:
            keep = bits <= PIXEL_BITS
        rows, columns = np.nonzero(keep)
        for row, column in zip(rows.tolist(), columns.tolist()):
            i = start + row
            if i < column:
                found[(i, column)] = (float(cosine[row, column]), int(bits[row, column]),
                                      float(closeness[row, column]))
    return found


def needs_pixels(bits: int, closeness: float, use_features: bool) -> bool:
    """Whether a pair rests on its hash alone, so its thumbnails must agree (PIXEL_AGREEMENT)."""
    return bits <= PIXEL_BITS and not (use_features and closeness >= SUPPORT_CLOSENESS)


def confirmed(pairs: dict, paths: list, use_features: bool, threads: int = 4) -> dict:
    """`pairs` less those that rest on the hash alone and whose thumbnails do not agree; each value gains the
    thumbnails' correlation (None where not checked)."""
    checked = [pair for pair, (_, bits, closeness) in pairs.items() if needs_pixels(bits, closeness, use_features)]
    agreement = dict(zip(checked, pixel_agreement([(paths[i], paths[j]) for i, j in checked], threads)))
    return {pair: (*values, agreement.get(pair)) for pair, values in pairs.items()
            if agreement.get(pair, 1.0) >= PIXEL_AGREEMENT}


def evidence(cosine: float, bits: int, closeness: float, use_features: bool, agreement: float | None = None) -> str:
    pixels = bits <= PIXEL_BITS
    features = use_features and closeness >= FEATURE_CLOSENESS
    how = "pixels and features" if pixels and features else "pixels" if pixels else "features" if features \
        else "pixels and features together"
    thumbnails = "" if agreement is None else f", grey thumbnails correlate {agreement:.3f}"
    return f"{how}: hash {bits} of 63 bits apart{thumbnails}, feature cosine {cosine:.3f}"


def duplicate_issues(splits, classes: list[str], mean: torch.Tensor, hashes: list[np.ndarray],
                     threads: int = 4) -> tuple[list[Issue], dict]:
    """A 'leak' per pair across two splits, a 'duplicate' per pair inside one (leaks first, closest first), and
    the settings used.

    `mean`: the training features' mean (subtracted before the cosine); `hashes`: each split's (n, 3) hashes.
    """
    vectors = F.normalize(torch.cat([s.features for s in splits]) - mean, dim=1)
    local = neighbour_cosines(vectors, len(splits[0].paths))
    typical = float(local[:len(splits[0].paths)].median()) if len(splits[0].paths) else 0.0
    use_features = typical <= DEGENERATE
    owner = [(s, row) for s in splits for row in range(len(s.paths))]
    issues = []
    pairs = candidate_pairs(vectors, np.concatenate(hashes), local.numpy(), use_features)
    pairs = confirmed(pairs, [split.paths[row] for split, row in owner], use_features, threads)
    for (i, j), (cosine, bits, closeness, agreement) in pairs.items():
        (a, row_a), (b, row_b) = owner[i], owner[j]
        label_a, label_b = classes[int(a.labels[row_a])], classes[int(b.labels[row_b])]
        # score: 1 for a pixel copy, falling with the bits apart and with the feature distance
        score = max(1.0 - bits / 63, cosine)
        detail = evidence(cosine, bits, closeness, use_features, agreement)
        if label_a != label_b:
            detail += f"; labelled {label_a} and {label_b}"
        issues.append(Issue("leak" if a.name != b.name else "duplicate", str(a.paths[row_a]), a.name, label_a,
                            score, detail, other_path=str(b.paths[row_b]), other_split=b.name,
                            other_label=label_b))
    issues.sort(key=lambda issue: (issue.kind != "leak", -issue.score, issue.path))
    return issues, {"duplicate_pixel_bits": PIXEL_BITS, "duplicate_support_bits": SUPPORT_BITS,
                    "duplicate_neighbour": NEIGHBOUR, "median_neighbour_cosine": round(typical, 4),
                    "features_used": use_features, "duplicate_pixel_closeness": PIXEL_CLOSENESS,
                    "duplicate_feature_closeness": FEATURE_CLOSENESS,
                    "duplicate_support_closeness": SUPPORT_CLOSENESS, "duplicate_pixel_agreement": PIXEL_AGREEMENT}
