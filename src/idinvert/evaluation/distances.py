"""Distances between a set of generated images and the real set: FID, KID and SWD.

``RealReference`` holds the real images and their Inception features and statistics (computed
once); each ``comparison()`` streams one generated set through the same metrics. FID uses
``metrics.fid`` (Inception pool3 Gaussians), KID ``metrics.kid`` (unbiased MMD² on the same
features, ×1e3), SWD ``metrics.swd`` (PGGAN's Laplacian-pyramid patches, ×1e3); KID subsets and
SWD patches are drawn with a fixed seed, so every generated set meets the same real samples.

FID and SWD are biased on small sets: FID upwards (its covariances have at most n − 1 ranks of
2048), SWD by the patch-sampling floor; compare only numbers computed from equal sizes. KID is
unbiased, so its value does not drift with the set size (only its noise does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from ..metrics import SlicedWassersteinDistance, SWDConfig
from ..metrics.fid import GaussianStatistics, frechet_distance
from ..metrics.inception import inception_features
from ..metrics.kid import KID_SUBSET_SIZE, KID_SUBSETS, kid_from_features

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]  # images [N, 3, H, W] → [N, D]


@dataclass(frozen=True)
class SetDistance:
    """FID and SWD of one generated set against the real set (None where skipped)."""

    count: int  # generated images compared
    real_count: int  # real images
    fid: float | None = None
    swd: float | None = None  # SWD ×1e3, mean over the pyramid levels
    swd_per_level: dict[int, float] = field(default_factory=dict)
    kid: float | None = None  # KID ×1e3, mean over subsets
    kid_std: float | None = None  # its standard deviation over subsets (×1e3)
    kid_subset_size: int | None = None

    def to_dict(self) -> dict:
        return {"count": self.count, "real_count": self.real_count, "fid": self.fid, "kid": self.kid,
                "kid_std": self.kid_std, "kid_subset_size": self.kid_subset_size, "swd": self.swd,
                "swd_per_level": {str(k): v for k, v in self.swd_per_level.items()}}


class SetComparison:
    """One generated set streamed in batches: ``update(images)`` then ``compute()``."""

    def __init__(self, reference: "RealReference") -> None:
        self.reference = reference
        self.count = 0
        self.stats = GaussianStatistics() if reference.real_stats is not None else None
        self.features: list[torch.Tensor] = []  # kept for KID when the reference has real features
        self.swd = None
        if reference.use_swd:
            self.swd = SlicedWassersteinDistance(reference.swd_config,
                                                 generator=torch.Generator().manual_seed(reference.seed))
            for batch in reference.real.split(reference.batch_size):
                self.swd.update(batch, real=True)

    @torch.no_grad()
    def update(self, images: torch.Tensor, features: torch.Tensor | None = None) -> None:
        """Add generated images ``[B, 3, H, W]`` in [-1, 1] (any device); ``features`` reuses
        ``reference.features(images)`` when several comparisons share the images."""
        images = images.clamp(-1, 1)
        self.count += images.shape[0]
        if self.stats is not None:
            features = self.reference.features(images) if features is None else features
            self.stats.update(features)
            if self.reference.real_features is not None:
                self.features.append(features.float().cpu())
        if self.swd is not None:
            self.swd.update(images.cpu(), real=False)

    def compute(self) -> SetDistance:
        ref = self.reference
        fid = None
        if self.stats is not None and self.count >= 2:
            fid = frechet_distance(ref.real_stats.mean, ref.real_stats.covariance(), self.stats.mean,
                                   self.stats.covariance())
        kid = None
        if self.features and ref.real_features is not None and min(self.count, ref.count) >= 2:
            kid = kid_from_features(ref.real_features, torch.cat(self.features), subsets=ref.kid_subsets,
                                    subset_size=KID_SUBSET_SIZE, generator=torch.Generator().manual_seed(ref.seed))
        swd, per_level = None, {}
        if self.swd is not None and self.count > 0:
            result = self.swd.compute()
            swd, per_level = result.mean, dict(result.per_level)
        return SetDistance(count=self.count, real_count=ref.count, fid=fid, swd=swd, swd_per_level=per_level,
                           kid=None if kid is None else 1e3 * kid.mean,
                           kid_std=None if kid is None else 1e3 * kid.std,
                           kid_subset_size=None if kid is None else kid.subset_size)


class RealReference:
    """The real set for FID/KID/SWD: Inception features computed once, compared many times.

    real ``[N, 3, H, W]`` in [-1, 1]; ``fid`` switches FID and KID (the same features), ``swd``
    SWD; ``feature_extractor`` replaces the Inception (tests); features run on ``device`` in
    batches of ``batch_size``; ``real_stats`` and ``real_features`` are the real set's feature
    statistics and features from an earlier run (then not recomputed; without the features, no KID).
    """

    def __init__(self, real: torch.Tensor, *, fid: bool = True, swd: bool = True, seed: int = 0,
                 device: torch.device | str = "cpu", batch_size: int = 32,
                 feature_extractor: FeatureExtractor | None = None, swd_config: SWDConfig = SWDConfig(),
                 real_stats: GaussianStatistics | None = None, real_features: torch.Tensor | None = None,
                 kid_subsets: int = KID_SUBSETS,
                 progress: Callable[[int], None] | None = None) -> None:
        if real.ndim != 4 or real.shape[1] != 3:
            raise ValueError(f"expected real images [N, 3, H, W], got {list(real.shape)}")
        self.real = real.detach().cpu().clamp(-1, 1)
        self.count = real.shape[0]
        self.seed, self.device, self.batch_size = seed, torch.device(device), batch_size
        self.swd_config = swd_config
        self.use_swd = swd and min(real.shape[2:]) >= max(swd_config.min_resolution, swd_config.patch_size)
        self.feature_extractor = feature_extractor or inception_features
        self.kid_subsets = kid_subsets
        self.real_stats: GaussianStatistics | None = real_stats if fid else None
        self.real_features: torch.Tensor | None = real_features.float().cpu() if fid and real_features is not None \
            else None
        if fid and real_stats is None and self.count >= 2:
            self.real_stats, features = GaussianStatistics(), []
            for batch in self.real.split(batch_size):
                features.append(self.features(batch))
                self.real_stats.update(features[-1])
                if progress is not None:
                    progress(batch.shape[0])
            self.real_features = torch.cat(features)

    @property
    def uses_fid(self) -> bool:
        return self.real_stats is not None

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Inception features ``[B, D]`` (CPU) of images in [-1, 1], computed on ``device``."""
        return self.feature_extractor(images.clamp(-1, 1).to(self.device)).detach().float().cpu()

    def comparison(self) -> SetComparison:
        return SetComparison(self)

    def compare(self, batches: Iterable[torch.Tensor] | torch.Tensor) -> SetDistance:
        """FID/SWD of a generated set given as one tensor or an iterable of batches."""
        session = self.comparison()
        for batch in ([batches] if isinstance(batches, torch.Tensor) else batches):
            session.update(batch)
        return session.compute()
