"""Pixel-level reconstruction metrics: MSE, PSNR and SSIM, one value per image pair.

All three take two batches ``[N, C, H, W]`` of the same shape in the library's range [-1, 1]
and return ``[N]``. Values are not clipped to the range first (a generator's output can
overshoot it slightly); clip before calling to measure what a saved file would hold.

- **MSE** is computed on [-1, 1] images, as in the paper's reconstruction tables:
  ``mean((a − b)²)`` over channels and pixels. It is 4× the MSE of the same images on [0, 1].
- **PSNR** uses the peak-to-peak range of [-1, 1], 2: ``10·log10(2² / MSE)`` dB. This equals the
  usual PSNR of the 8-bit images (peak 255), since both numerator and MSE scale together.
  Identical images give ``inf``.
- **SSIM** follows Wang et al. (2004) as scikit-image's ``structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`` computes it:
  images mapped to [0, 1] (``(x + 1)/2``), an 11×11 Gaussian window with σ = 1.5 (normalised),
  K1 = 0.01, K2 = 0.03, population (not sample) statistics, the SSIM map taken over the "valid"
  region only (window centres at least 5 pixels from the border, no padding), and its mean over
  that region and over channels (each channel an independent grey image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PSNR_PEAK = 2.0  # peak-to-peak range of images in [-1, 1]
SSIM_WINDOW = 11  # side of the Gaussian window
SSIM_SIGMA = 1.5  # σ of the Gaussian window
SSIM_K1 = 0.01  # C1 = (K1·L)², L = 1 on [0, 1] images
SSIM_K2 = 0.03  # C2 = (K2·L)²


def check_pair(a: torch.Tensor, b: torch.Tensor, *, channels: int | None = None) -> None:
    """Raise ValueError unless ``a`` and ``b`` are image batches ``[N, C, H, W]`` of one shape."""
    if a.ndim != 4 or a.shape != b.shape:
        raise ValueError(f"expected two image batches [N, C, H, W] of the same shape, "
                         f"got {list(a.shape)} and {list(b.shape)}")
    if channels is not None and a.shape[1] != channels:
        raise ValueError(f"expected {channels} channels, got {a.shape[1]} ({list(a.shape)})")


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error of images in [-1, 1]: ``[N]``.

    >>> x = torch.zeros(1, 3, 4, 4)
    >>> mse(x, x + 0.5)
    tensor([0.2500])
    """
    check_pair(a, b)
    return (a.float() - b.float()).square().flatten(1).mean(dim=1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB with peak-to-peak range 2 (images in [-1, 1]): ``[N]``.

    >>> x = torch.zeros(1, 3, 4, 4)
    >>> psnr(x, x + 0.02).round()   # MSE 4e-4 → 10·log10(4 / 4e-4)
    tensor([40.])
    """
    error = mse(a, b).double()
    return (10.0 * torch.log10(PSNR_PEAK**2 / error)).float()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian taps ``[size]`` centred on the middle tap (float64)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Gaussian window 11, σ = 1.5, on [0, 1]-scaled images, mean over channels): ``[N]``.

    Computed in float64; images must be at least 11 pixels on each side.

    >>> x = torch.rand(2, 3, 16, 16) * 2 - 1
    >>> ssim(x, x)
    tensor([1., 1.])
    """
    check_pair(a, b)
    n, c, h, w = a.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels, got {h}×{w}")
    x = ((a.double() + 1.0) / 2.0).reshape(n * c, 1, h, w)
    y = ((b.double() + 1.0) / 2.0).reshape(n * c, 1, h, w)
    taps = gaussian_window().to(x.device)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable valid convolution
        t = F.conv2d(t, taps.view(1, 1, -1, 1))
        return F.conv2d(t, taps.view(1, 1, 1, -1))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return index.reshape(n, -1).mean(dim=1).float()

