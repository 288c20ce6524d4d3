"""Outliers: images far from every training image in feature space (a screenshot, a photo of the wrong thing).

Each image's distance is 1 - the mean cosine similarity of its K nearest training
images, itself left out. Distances are put on the training split's own scale, a
robust z-score (median and MAD): the cut does not depend on the backbone or on
how varied the classes are, only on how unusual an image is among these ones.
The features are not centred here (unlike for duplicates): what sets a screenshot
or a checkerboard apart is that its features leave the direction all photos share.
On flowers12 with lite0, planted synthetic images (a screenshot of text, a
checkerboard, grey, noise, a gradient) score z 4.3 to 4.7 uncentred and no
flowers12 image above 2.8; centred, they scored 2.4 to 2.9, among the oddest
flower photos. An image whose class is rare has few close neighbours, so a
rare class's images can look far: read the class next to each outlier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tlzoo.findings.issues import Issue

K = 10
ROBUST_Z = 3.5  # a normal distribution passes this about once in 4,300 images
BLOCK = 1024


def knn_distances(query: torch.Tensor, base: torch.Tensor, k: int, skip_self: bool) -> torch.Tensor:
    """1 - mean cosine of each (normalised) query row's k most similar base rows; row i of base is query row i
    when `skip_self`."""
    k = min(k, base.shape[0] - (1 if skip_self else 0))
    if k <= 0:
        return torch.zeros(query.shape[0])
    out = []
    for start in range(0, query.shape[0], BLOCK):
        similarity = query[start:start + BLOCK] @ base.T
        if skip_self:
            rows = torch.arange(similarity.shape[0])
            similarity[rows, rows + start] = -2.0
        out.append(1 - similarity.topk(k, dim=1).values.mean(1))
    return torch.cat(out)


def outlier_issues(splits, classes: list[str], k: int = K, robust_z: float = ROBUST_Z) -> tuple[list[Issue], dict]:
    """Issues for the images whose robust z-score reaches `robust_z`, farthest first, and the settings used."""
    train = F.normalize(splits[0].features, dim=1)
    distances = [knn_distances(train, train, k, skip_self=True)]
    distances += [knn_distances(F.normalize(s.features, dim=1), train, k, skip_self=False) for s in splits[1:]]
    median = distances[0].median()
    spread = 1.4826 * (distances[0] - median).abs().median().clamp_min(1e-6)
    issues = []
    for split, distance in zip(splits, distances):
        z = (distance - median) / spread
        for row in (z >= robust_z).nonzero().flatten().tolist():
            label = classes[int(split.labels[row])]
            issues.append(Issue("outlier", str(split.paths[row]), split.name, label, float(z[row]),
                                f"mean cosine distance {float(distance[row]):.3f} to its {k} nearest training "
                                f"images; the training median is {float(median):.3f}"))
    issues.sort(key=lambda issue: -issue.score)
    return issues, {"outlier_k": k, "outlier_robust_z": robust_z, "outlier_median_distance": round(float(median), 4)}
