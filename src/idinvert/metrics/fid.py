"""Fréchet Inception Distance (Heusel et al., 2017), streaming over image sets of any size.

    FID = ‖μ_r − μ_g‖² + tr(Σ_r + Σ_g − 2·(Σ_r Σ_g)^½)

over the Inception pool3 features (``metrics.inception``) of the real and generated sets. The
means and covariances (unbiased, ``n − 1``) are accumulated batch by batch in float64 with
Chan et al.'s pairwise update, so memory does not grow with the set. ``tr((Σ_r Σ_g)^½)`` is the
sum of the square roots of the eigenvalues of the symmetric ``Σ_r^½ Σ_g Σ_r^½`` (same spectrum),
from two symmetric eigen-decompositions; eigenvalues below zero by round-off count as zero.
"""

from __future__ import annotations

from typing import Callable

import torch

from .inception import inception_features

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]  # images [N, 3, H, W] → features [N, D]


class GaussianStatistics:
    """Running mean and covariance of feature vectors, in float64 on the CPU."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None  # [D]
        self.scatter: torch.Tensor | None = None  # [D, D], Σ (x − μ)(x − μ)ᵀ

    def update(self, features: torch.Tensor) -> None:
        if features.ndim != 2:
            raise ValueError(f"expected features [N, D], got {list(features.shape)}")
        x = features.detach().to("cpu", torch.float64)
        n = x.shape[0]
        if n == 0:
            return
        mean = x.mean(dim=0)
        centred = x - mean
        scatter = centred.T @ centred
        if self.mean is None:
            self.count, self.mean, self.scatter = n, mean, scatter
            return
        if mean.shape != self.mean.shape:
            raise ValueError(f"features of dimension {mean.shape[0]} after {self.mean.shape[0]}")
        total = self.count + n
        delta = mean - self.mean
        self.scatter = self.scatter + scatter + torch.outer(delta, delta) * (self.count * n / total)
        self.mean = self.mean + delta * (n / total)
        self.count = total

    def covariance(self) -> torch.Tensor:
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
        return self.scatter / (self.count - 1)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Fréchet distance between the Gaussians N(μ1, Σ1) and N(μ2, Σ2) (float64).

    >>> mu, eye = torch.zeros(2), torch.eye(2)
    >>> round(frechet_distance(mu, eye, mu + 1, 4 * eye), 6)  # 2·1² + 2·(1 − 2)²
    4.0
    """
    mu1, mu2 = mu1.double().cpu(), mu2.double().cpu()
    sigma1, sigma2 = sigma1.double().cpu(), sigma2.double().cpu()
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.numel(),) * 2:
        raise ValueError(f"mismatched statistics: μ {list(mu1.shape)}, {list(mu2.shape)}; "
                         f"Σ {list(sigma1.shape)}, {list(sigma2.shape)}")
    root1 = _sqrt_psd((sigma1 + sigma1.T) / 2)
    inner = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return float(value)


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets ``[N, D]`` and ``[M, D]`` held in memory."""
    stats = []
    for features in (real, fake):
        s = GaussianStatistics()
        s.update(features)
        stats.append(s)
    return frechet_distance(stats[0].mean, stats[0].covariance(), stats[1].mean, stats[1].covariance())


class FrechetInceptionDistance:
    """FID accumulated over batches: ``update(images, real=True|False)`` then ``compute()``.

    Images are ``[N, 3, H, W]`` in [-1, 1] of any size (resized as ``metrics.inception`` says);
    features are computed on the images' device. ``feature_extractor`` replaces the Inception
    (for tests or other feature spaces). The paper's FID uses 50,000 generated images or the
    whole real set; with fewer, FID is biased upwards.

    >>> fid = FrechetInceptionDistance(feature_extractor=lambda x: x.flatten(1))
    >>> x = torch.randn(64, 3, 2, 2)
    >>> fid.update(x, real=True); fid.update(x, real=False)
    >>> abs(fid.compute()) < 1e-9
    True
    """

    def __init__(self, *, feature_extractor: FeatureExtractor | None = None) -> None:
        self.feature_extractor = feature_extractor or inception_features
        self.reset()

    def reset(self) -> None:
        self.real = GaussianStatistics()
        self.fake = GaussianStatistics()

    @torch.no_grad()
    def update(self, images: torch.Tensor, *, real: bool) -> None:
        (self.real if real else self.fake).update(self.feature_extractor(images))

    def compute(self) -> float:
        for name, stats in (("real", self.real), ("generated", self.fake)):
            if stats.count < 2:
                raise ValueError(f"FID needs at least 2 {name} images, got {stats.count}")
        return frechet_distance(self.real.mean, self.real.covariance(), self.fake.mean, self.fake.covariance())
