"""LogME (You et al., ICML 2021): the maximum log evidence of labels given features, per sample.

For one target column y (n values) and features F (n x D) the model is Bayesian linear
regression: weights w ~ N(0, 1/alpha I), y | F, w ~ N(F w, 1/beta I). The evidence
p(y | F, alpha, beta) = N(y | 0, 1/beta I + 1/alpha F F^T) is maximised over alpha and beta
with MacKay's fixed-point updates, made cheap by one SVD of F shared by every class:
with F^T F = V diag(sigma) V^T,
    gamma = sum_i beta sigma_i / (alpha + beta sigma_i)     (effective number of parameters)
    m     = beta A^-1 F^T y,  A = alpha I + beta F^T F      (posterior mean of w)
    alpha = gamma / |m|^2,    beta = (n - gamma) / |F m - y|^2.
LogME averages the maximised log evidence / n over the one-hot columns of the labels.
Higher is better; values compare backbones on one data set, not across data sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MAX_ITERATIONS = 100
TOLERANCE = 1e-6  # relative change of alpha / beta that ends the fixed-point iteration


@dataclass(frozen=True)
class Spectrum:
    """One SVD of the features, reused for every target column."""

    features: torch.Tensor  # (n, D) float64
    u: torch.Tensor  # (n, r) left singular vectors
    singular: torch.Tensor  # (r,) singular values
    v: torch.Tensor  # (D, r) right singular vectors

    @classmethod
    def of(cls, features: torch.Tensor) -> "Spectrum":
        """The thin SVD from the eigendecomposition of the smaller Gram matrix (several times faster than svd)."""
        f = features.double()
        wide = f.shape[0] <= f.shape[1]
        eigenvalues, vectors = torch.linalg.eigh(f @ f.T if wide else f.T @ f)
        keep = eigenvalues > eigenvalues.max().clamp_min(0) * 1e-12  # the rest is rounding noise: rank r
        singular, vectors = eigenvalues[keep].sqrt(), vectors[:, keep]
        other = (f.T if wide else f) @ vectors / singular
        u, v = (vectors, other) if wide else (other, vectors)
        return cls(f, u, singular, v)

    @property
    def sigma(self) -> torch.Tensor:
        """Non-zero part of the eigenvalues of F^T F (the other D - r are zero)."""
        return self.singular ** 2


def log_evidence(spectrum: Spectrum, y: torch.Tensor, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta), from the posterior mean (no n x n matrix is formed)."""
    n, dims = spectrum.features.shape
    sigma = spectrum.sigma
    m = posterior_mean(spectrum, y.double(), alpha, beta)
    residual = float(((spectrum.features @ m - y.double()) ** 2).sum())
    # log det A over all D dimensions: the D - r directions outside F's row space contribute log alpha each
    log_det = float(torch.log(alpha + beta * sigma).sum()) + (dims - sigma.numel()) * math.log(alpha)
    return (n / 2 * math.log(beta) + dims / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * residual - alpha / 2 * float(m @ m) - log_det / 2)


def posterior_mean(spectrum: Spectrum, y: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    # F^T y = V S U^T y lies in V's span, where A^-1 acts as 1 / (alpha + beta sigma)
    projected = spectrum.singular * (spectrum.u.T.contiguous() @ y)
    return spectrum.v @ (beta * projected / (alpha + beta * spectrum.sigma))


def maximise_evidence(spectrum: Spectrum, y: torch.Tensor) -> tuple[float, float, float]:
    """(alpha, beta, log evidence / n) at the fixed point of MacKay's updates, from alpha = beta = 1.

    Each update works in the singular basis: with z = U^T y, V^T m = beta s z / (alpha + beta sigma)
    and |F m - y|^2 = |s (V^T m) - z|^2 + |y|^2 - |z|^2, so an iteration costs O(r), not O(n D).
    """
    n = spectrum.features.shape[0]
    y = y.double()
    z = spectrum.u.T.contiguous() @ y
    outside = max(float(y @ y) - float(z @ z), 0.0)  # the part of y no linear map of F reaches
    s, sigma = spectrum.singular, spectrum.sigma
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITERATIONS):
        coefficients = beta * s * z / (alpha + beta * sigma)
        gamma = float((beta * sigma / (alpha + beta * sigma)).sum())
        residual = float(((s * coefficients - z) ** 2).sum()) + outside
        new_alpha = gamma / max(float(coefficients @ coefficients), 1e-30)
        new_beta = (n - gamma) / max(residual, 1e-30)
        done = abs(new_alpha / new_beta - alpha / beta) <= TOLERANCE * (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return alpha, beta, log_evidence(spectrum, y, alpha, beta) / n


def logme(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """The LogME score of (n, D) features for integer labels: mean over classes of the per-sample evidence."""
    spectrum = Spectrum.of(features)
    num_classes = num_classes or int(labels.max()) + 1
    scores = [maximise_evidence(spectrum, (labels == c).double())[2] for c in range(num_classes)]
    return sum(scores) / len(scores)
