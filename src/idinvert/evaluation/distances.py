"""Distances between a set of generated images and the real set: FID and SWD.

``RealReference`` holds the real images and their Inception statistics (computed once);
each ``comparison()`` streams one generated set through the same metrics. FID uses
``metrics.fid`` (Inception pool3 Gaussians), SWD ``metrics.swd`` (PGGAN's Laplacian-pyramid
patches, ×1e3) with a fixed seed, so every generated set is compared with the same real patches
and projection directions.

Both are biased on small sets: FID upwards (its covariances have at most n − 1 ranks of 2048),
SWD by the patch-sampling floor. Every result carries the sizes of the two sets; compare only
numbers computed from equal sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from ..metrics import SlicedWassersteinDistance, SWDConfig
from ..metrics.fid import GaussianStatistics, frechet_distance
from ..metrics.inception import inception_features

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]  # images [N, 3, H, W] → [N, D]


@dataclass(frozen=True)
class SetDistance:
    """FID and SWD of one generated set against the real set (None where skipped)."""

    count: int  # generated images compared
    real_count: int  # real images
    fid: float | None = None
    swd: float | None = None  # SWD ×1e3, mean over the pyramid levels
    swd_per_level: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"count": self.count, "real_count": self.real_count, "fid": self.fid, "swd": self.swd,
                "swd_per_level": {str(k): v for k, v in self.swd_per_level.items()}}


class SetComparison:
    """One generated set streamed in batches: ``update(images)`` then ``compute()``."""

    def __init__(self, reference: "RealReference") -> None:
        self.reference = reference
        self.count = 0
        self.stats = GaussianStatistics() if reference.real_stats is not None else None
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
            self.stats.update(self.reference.features(images) if features is None else features)
        if self.swd is not None:
            self.swd.update(images.cpu(), real=False)

    def compute(self) -> SetDistance:
        ref = self.reference
        fid = None
        if self.stats is not None and self.count >= 2:
            fid = frechet_distance(ref.real_stats.mean, ref.real_stats.covariance(), self.stats.mean,
                                   self.stats.covariance())
        swd, per_level = None, {}
        if self.swd is not None and self.count > 0:
            result = self.swd.compute()
            swd, per_level = result.mean, dict(result.per_level)
        return SetDistance(count=self.count, real_count=ref.count, fid=fid, swd=swd, swd_per_level=per_level)


class RealReference:
    """The real set for FID/SWD: Inception statistics computed once, compared many times.

    real ``[N, 3, H, W]`` in [-1, 1]; ``fid``/``swd`` switch the metrics; ``feature_extractor``
    replaces the Inception (tests); features run on ``device`` in batches of ``batch_size``;
    ``real_stats`` are the real set's feature statistics from an earlier run (then not recomputed).
    """

    def __init__(self, real: torch.Tensor, *, fid: bool = True, swd: bool = True, seed: int = 0,
                 device: torch.device | str = "cpu", batch_size: int = 32,
                 feature_extractor: FeatureExtractor | None = None, swd_config: SWDConfig = SWDConfig(),
                 real_stats: GaussianStatistics | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        if real.ndim != 4 or real.shape[1] != 3:
            raise ValueError(f"expected real images [N, 3, H, W], got {list(real.shape)}")
        self.real = real.detach().cpu().clamp(-1, 1)
        self.count = real.shape[0]
        self.seed, self.device, self.batch_size = seed, torch.device(device), batch_size
        self.swd_config = swd_config
        self.use_swd = swd and min(real.shape[2:]) >= max(swd_config.min_resolution, swd_config.patch_size)
        self.feature_extractor = feature_extractor or inception_features
        self.real_stats: GaussianStatistics | None = real_stats if fid else None
        if fid and real_stats is None and self.count >= 2:
            self.real_stats = GaussianStatistics()
            for batch in self.real.split(batch_size):
                self.real_stats.update(self.features(batch))
                if progress is not None:
                    progress(batch.shape[0])

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
