"""Domain-guided encoder: image ``[N, 3, R, R]`` in [-1, 1] → W+ code ``[N, L, C]`` (spec §2.1).

The architecture of the released ``styleganinv_*_encoder.pth``: a 3×3 stem, then
``log2(R) − 2`` residual blocks each preceded by 2×2 average pooling, then a dense layer
(× 1/√fan_in) followed by batch norm. Batch norm comes before the activation everywhere and
its scale γ is frozen at 1 (TF ``scale=False``). Run it in ``eval()`` mode for inversion.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.nn.functional import all_reduce

from .config import EncoderConfig
from .derived import derived
from .layers import LRELU_SLOPE, BiasHolder


class BatchNormLayer(nn.Module):
    """``bn.{weight,bias,running_mean,running_var}`` with γ frozen at 1.

    With ``sync=True`` and an initialised process group, training-mode statistics are
    all-reduced across ranks (with gradients), so data-parallel training computes the same
    statistics as one process over the global batch.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)
        self.bn.weight.requires_grad_(False)
        self.sync = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.sync and self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return self.bn(x)
        return _synced_batch_norm(x, self.bn)


def _synced_batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    count = torch.tensor([float(x.shape[0] * x.shape[2] * x.shape[3])], device=x.device)
    stats = torch.cat([x.sum(dim=(0, 2, 3)), x.square().sum(dim=(0, 2, 3)), count])
    stats = all_reduce(stats)
    c = x.shape[1]
    total = stats[-1]
    mean = stats[:c] / total
    var = stats[c:2 * c] / total - mean.square()
    with torch.no_grad():
        unbiased = var * total / (total - 1).clamp(min=1)
        bn.running_mean.lerp_(mean.detach(), bn.momentum)
        bn.running_var.lerp_(unbiased.detach(), bn.momentum)
        bn.num_batches_tracked += 1
    shape = (1, c, 1, 1)
    x = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
    return x * bn.weight.view(shape) + bn.bias.view(shape)


class FirstBlock(nn.Module):
    """Stem: 3×3 conv (no bias) → BN → lrelu."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = BatchNormLayer(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.bn(self.conv(x)), LRELU_SLOPE)


class ResBlock(nn.Module):
    """2×2 average pooling, then ``main(x) + shortcut(x)`` with no activation after the sum.

    main: conv3×3 in→in + bias → BN → lrelu → conv3×3 in→out + bias → BN → lrelu.
    shortcut: conv1×1 (no bias) → BN → lrelu when the width changes, else identity.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = min(in_channels, out_channels)
        self.has_shortcut = in_channels != out_channels
        if self.has_shortcut:
            self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
            self.bn = BatchNormLayer(out_channels)
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False)
        self.wscale1 = BiasHolder(hidden)
        self.bn1 = BatchNormLayer(hidden)
        self.conv2 = nn.Conv2d(hidden, out_channels, 3, padding=1, bias=False)
        self.wscale2 = BiasHolder(out_channels)
        self.bn2 = BatchNormLayer(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, 2)
        shortcut = F.leaky_relu(self.bn(self.conv(x)), LRELU_SLOPE) if self.has_shortcut else x
        y = self.conv1(x) + self.wscale1.bias.view(1, -1, 1, 1)
        y = F.leaky_relu(self.bn1(y), LRELU_SLOPE)
        y = self.conv2(y) + self.wscale2.bias.view(1, -1, 1, 1)
        y = F.leaky_relu(self.bn2(y), LRELU_SLOPE)
        return y + shortcut


class LastBlock(nn.Module):
    """Flatten the 4×4 map, dense (no bias, × 1/√fan_in) to ``L·C``, then BN."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features, bias=False)
        nn.init.normal_(self.fc.weight)
        self.scale = 1.0 / math.sqrt(in_features)
        self.bn = BatchNormLayer(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = derived(self, "weight", lambda: self.fc.weight * self.scale, self.fc.weight)
        x = F.linear(x.flatten(1), weight)
        return self.bn(x[:, :, None, None])[:, :, 0, 0]


class DomainGuidedEncoder(nn.Module):
    """The IDInvert encoder E (also used, with the same architecture, as the conventional baseline)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.block0 = FirstBlock(config.image_channels, config.channels(0))
        for b in range(1, config.num_res_blocks + 1):
            self.add_module(f"block{b}", ResBlock(config.channels(b - 1), config.channels(b)))
        last = config.num_res_blocks + 1
        self.add_module(f"block{last}", LastBlock(config.channels(last - 1) * 16,
                                                  config.num_layers * config.w_dim))
        self.num_blocks = last + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.config.resolution
        if x.ndim != 4 or x.shape[1:] != (self.config.image_channels, r, r):
            raise ValueError(f"expected images [N, {self.config.image_channels}, {r}, {r}], got {list(x.shape)}")
        for b in range(self.num_blocks):
            x = getattr(self, f"block{b}")(x)
        return x.view(-1, self.config.num_layers, self.config.w_dim)

    def set_sync_batch_norm(self, enabled: bool) -> None:
        for m in self.modules():
            if isinstance(m, BatchNormLayer):
                m.sync = enabled
