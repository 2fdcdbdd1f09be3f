"""Kernel Inception Distance (Bińkowski et al., 2018): unbiased MMD² over Inception features.

With the cubic polynomial kernel ``k(x, y) = (xᵀy / d + 1)³`` (d = feature dimension), for
each of ``subsets`` random subsets of size m drawn without replacement from each set:

    MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m−1)) + Σ_{i≠j} k(y_i, y_j) / (m(m−1)) − 2 Σ_{i,j} k(x_i, y_j) / m²

KID is the mean over subsets (and its standard deviation is reported beside it). The standard
setting is 100 subsets of 1000; m is capped by the smaller set's size. Features are kept (as
float32 on the CPU) because subsets are drawn only at ``compute()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .fid import FeatureExtractor
from .inception import inception_features

KID_SUBSETS = 100  # number of random subsets
KID_SUBSET_SIZE = 1000  # m, capped by the set sizes


@dataclass(frozen=True)
class KIDResult:
    mean: float  # KID: mean of MMD²_u over subsets
    std: float  # standard deviation over subsets
    subset_size: int  # m actually used


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(x yᵀ / d + 1)³`` for ``x [N, d]``, ``y [M, d]`` → ``[N, M]``."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² with the polynomial kernel between two samples of the same size m ≥ 2."""
    m = x.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within - 2.0 * kxy.mean()


def kid_from_features(real: torch.Tensor, fake: torch.Tensor, *, subsets: int = KID_SUBSETS,
                      subset_size: int = KID_SUBSET_SIZE, generator: torch.Generator | None = None) -> KIDResult:
    """KID between feature sets ``[N, D]`` and ``[M, D]`` (float64 arithmetic, CPU).

    ``generator`` draws the subsets (a CPU ``torch.Generator``; seeded for reproducible values).
    """
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected features [N, D] and [M, D], got {list(real.shape)} and {list(fake.shape)}")
    m = min(subset_size, real.shape[0], fake.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 features in each set, got {real.shape[0]} and {fake.shape[0]}")
    real, fake = real.detach().to("cpu", torch.float64), fake.detach().to("cpu", torch.float64)
    values = torch.empty(subsets, dtype=torch.float64)
    for s in range(subsets):
        x = real[torch.randperm(real.shape[0], generator=generator)[:m]]
        y = fake[torch.randperm(fake.shape[0], generator=generator)[:m]]
        values[s] = mmd2_unbiased(x, y)
    std = float(values.std()) if subsets > 1 else 0.0
    return KIDResult(mean=float(values.mean()), std=std, subset_size=m)


class KernelInceptionDistance:
    """KID accumulated over batches: ``update(images, real=True|False)`` then ``compute()``.

    ``generator`` (CPU) draws the subsets at ``compute()``; ``feature_extractor`` replaces the
    Inception as in ``FrechetInceptionDistance``.
    """

    def __init__(self, *, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
                 feature_extractor: FeatureExtractor | None = None,
                 generator: torch.Generator | None = None) -> None:
        self.subsets = subsets
        self.subset_size = subset_size
        self.feature_extractor = feature_extractor or inception_features
        self.generator = generator
        self.reset()

    def reset(self) -> None:
        self.real_features: list[torch.Tensor] = []
        self.fake_features: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, images: torch.Tensor, *, real: bool) -> None:
        features = self.feature_extractor(images).detach().to("cpu", torch.float32)
        (self.real_features if real else self.fake_features).append(features)

    def compute(self) -> KIDResult:
        if not self.real_features or not self.fake_features:
            raise ValueError("KID needs both real and generated images: call update(..., real=True/False)")
        return kid_from_features(torch.cat(self.real_features), torch.cat(self.fake_features),
                                 subsets=self.subsets, subset_size=self.subset_size, generator=self.generator)
