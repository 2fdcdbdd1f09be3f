"""StyleGAN ``D_basic`` discriminator (spec §3) with progressive-growing inputs.

Blocks from R down to 8: conv3×3 → lrelu, then blur → conv3×3 with ×½ downsampling → lrelu;
the 4×4 head: minibatch stddev → conv3×3 → dense → dense (gain 1) → raw score ``[N, 1]``.
Equalized learning rate everywhere. The down-conv is always computed in the fused form (a
strided 4×4 convolution), which equals "conv3×3 then 2×2 average" exactly. No official
PyTorch weights exist for D, so key names are this project's own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import DiscriminatorConfig
from .layers import LRELU_SLOPE, Blur, DenseLayer, EqualConv2d, conv_downsample


class FromRGB(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = EqualConv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x), LRELU_SLOPE)


class DownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.blur = Blur(in_channels)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv0(x), LRELU_SLOPE)
        x = conv_downsample(self.blur(x), self.conv1.weight * self.conv1.scale)
        return F.leaky_relu(x + self.conv1.bias.view(1, -1, 1, 1), LRELU_SLOPE)


def minibatch_stddev(x: torch.Tensor, group_size: int, num_features: int) -> torch.Tensor:
    """Append, as ``num_features`` channels, the stddev over groups of consecutive samples,
    averaged over features and pixels. Groups are consecutive (TF strides them), so that a
    batch split into per-process slices forms the same groups as the whole batch."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    while n % g:
        g -= 1
    y = x.view(n // g, g, num_features, c // num_features, h, w)
    y = y - y.mean(dim=1, keepdim=True)
    y = torch.sqrt(y.square().mean(dim=1) + 1e-8)  # [M, F, c/F, h, w]
    y = y.mean(dim=(2, 3, 4))  # [M, F]
    y = y.view(-1, 1, num_features, 1, 1).expand(-1, g, -1, h, w).reshape(n, num_features, h, w)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """Image ``[N, 3, r, r]`` → score ``[N, 1]``, where ``r = R / 2^floor(lod)``.

    A fractional ``lod`` blends in the path from the 2× downsampled image, as in progressive
    growing; ``lod = 0`` (the default) is the plain full-resolution discriminator.
    """

    kind = "stylegan"  # a pack's discriminator_kind

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        self.resolutions = [config.resolution >> i for i in range(int(math.log2(config.resolution)) - 1)]
        self.from_rgb = nn.ModuleDict({str(r): FromRGB(config.image_channels, config.channels(r))
                                       for r in self.resolutions})
        self.blocks = nn.ModuleDict({str(r): DownBlock(config.channels(r), config.channels(r // 2))
                                     for r in self.resolutions[:-1]})
        c4 = config.channels(4)
        self.conv = EqualConv2d(c4 + config.mbstd_features, c4, 3)
        self.dense0 = DenseLayer(c4 * 16, c4)
        self.dense1 = DenseLayer(c4, 1, gain=1.0, activate=False)

    def forward(self, image: torch.Tensor, *, lod: float = 0.0) -> torch.Tensor:
        res = self.config.resolution >> int(math.floor(lod))
        if image.ndim != 4 or image.shape[2:] != (res, res):
            raise ValueError(f"expected images [N, C, {res}, {res}] at lod {lod}, got {list(image.shape)}")
        alpha = lod - math.floor(lod)
        x = self.from_rgb[str(res)](image)
        while res > 4:
            x = self.blocks[str(res)](x)
            res //= 2
            if alpha > 0:
                x = torch.lerp(x, self.from_rgb[str(res)](F.avg_pool2d(image, 2)), alpha)
                alpha = 0.0
        x = minibatch_stddev(x, self.config.mbstd_group_size, self.config.mbstd_features)
        x = F.leaky_relu(self.conv(x), LRELU_SLOPE)
        return self.dense1(self.dense0(x.flatten(1)))
