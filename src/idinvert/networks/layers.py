"""Building blocks shared by the generator and the discriminator.

Module and attribute names reproduce the key names of the official PyTorch port
(``fc.weight``, ``wscale.bias``, ``blur.kernel`` …), so that the released state_dicts
load strictly into these modules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .derived import derived

LRELU_SLOPE = 0.2


class WeightHolder(nn.Module):
    """Holds one weight tensor under the key ``weight`` (e.g. ``layer1.conv.weight``)."""

    def __init__(self, *shape: int, init_std: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(shape) * init_std)


class BiasHolder(nn.Module):
    """Holds one bias tensor under the key ``bias`` (e.g. ``dense0.wscale.bias``)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(size))


class DenseLayer(nn.Module):
    """Equalized-lr dense layer: ``y = x (W c)ᵀ + b lr_mul`` with ``c = gain / √fan_in · lr_mul``.

    Stored weights are initialised N(0, 1/lr_mul) as in TF StyleGAN, so the runtime weight
    has the He-initialised scale whatever ``lr_mul`` is.
    """

    def __init__(self, in_features: int, out_features: int, *, gain: float = math.sqrt(2.0),
                 lr_mul: float = 1.0, activate: bool = True) -> None:
        super().__init__()
        self.fc = WeightHolder(out_features, in_features, init_std=1.0 / lr_mul)
        self.wscale = BiasHolder(out_features)
        self.scale = gain / math.sqrt(in_features) * lr_mul
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = derived(self, "weight", lambda: self.fc.weight * self.scale, self.fc.weight)
        bias = derived(self, "bias", lambda: self.wscale.bias * self.lr_mul, self.wscale.bias)
        x = F.linear(x, weight, bias)
        return F.leaky_relu(x, LRELU_SLOPE) if self.activate else x


class EqualConv2d(nn.Module):
    """Equalized-lr convolution ``conv(x, W·gain/√(in·k²)) + b`` (``[out, in, k, k]`` weight)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 gain: float = math.sqrt(2.0), bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = derived(self, "weight", lambda: self.weight * self.scale, self.weight)
        return F.conv2d(x, weight, self.bias, padding=self.padding)


def blur_kernel(channels: int) -> torch.Tensor:
    """Depthwise ``[1,2,1]ᵀ[1,2,1] / 16`` kernel, shape ``[C, 1, 3, 3]``."""
    k = torch.tensor([1.0, 2.0, 1.0])
    k = torch.outer(k, k)
    return (k / k.sum()).expand(channels, 1, 3, 3).contiguous()


class Blur(nn.Module):
    """Depthwise 3×3 binomial blur, stride 1, padding 1 (key ``blur.kernel``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, padding=1, groups=x.shape[1])


def sum_shifts_4x4(kernel_hwio: torch.Tensor) -> torch.Tensor:
    """Pad a ``[3, 3, in, out]`` kernel to 5×5 and add its four one-pixel shifts: ``[4, 4, in, out]``.

    Transposed convolution with the result (stride 2) equals nearest ×2 upsampling followed by
    a 3×3 convolution with the spatially flipped kernel; strided convolution with a quarter of it
    equals a 3×3 convolution followed by 2×2 average pooling.
    """
    k = F.pad(kernel_hwio, (0, 0, 0, 0, 1, 1, 1, 1))
    return k[1:, 1:] + k[:-1, 1:] + k[1:, :-1] + k[:-1, :-1]


def upsample_kernel(kernel_hwio: torch.Tensor) -> torch.Tensor:
    """The transposed-convolution kernel ``[in, out, 4, 4]`` of ``upsample_conv``, contiguous (the
    convolution would copy a permuted one at every call)."""
    return sum_shifts_4x4(kernel_hwio).permute(2, 3, 0, 1).contiguous()


def upsample_conv(x: torch.Tensor, kernel_hwio: torch.Tensor | None = None, *,
                  kernel: torch.Tensor | None = None) -> torch.Tensor:
    """The official fused up-conv: transposed convolution, stride 2, with the summed 4×4 kernel
    (``kernel``: that kernel already made by ``upsample_kernel``)."""
    k = upsample_kernel(kernel_hwio) if kernel is None else kernel  # [in, out, 4, 4]
    return F.conv_transpose2d(x, k, stride=2, padding=1)


def conv_downsample(x: torch.Tensor, kernel_oihw: torch.Tensor) -> torch.Tensor:
    """3×3 convolution (padding 1) then 2×2 average pooling, computed as one strided 4×4 convolution."""
    k = sum_shifts_4x4(kernel_oihw.permute(2, 3, 1, 0)).permute(3, 2, 0, 1) * 0.25  # [out, in, 4, 4]
    return F.conv2d(x, k, stride=2, padding=1)


def instance_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Subtract the per-channel spatial mean, divide by ``sqrt(mean(x²) + eps)``; no affine."""
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return x * torch.rsqrt(x.square().mean(dim=(2, 3), keepdim=True) + eps)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)
