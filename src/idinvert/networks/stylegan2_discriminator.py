"""StyleGAN2 discriminator (config F, "resnet" architecture) for ``StyleGAN2Config``.

Image ``[N, 3, R, R]`` → 1×1 fromRGB at R → per resolution R … 8 a residual block (3×3 conv,
3×3 conv with FIR downsampling, a 1×1 downsampling skip; the sum scaled by √½) → at 4×4 the
minibatch standard deviation as an extra channel, a 3×3 conv, a dense layer and the logit ``[N, 1]``.
With ``conv_clamp`` c, every convolution but the skip clamps its output to ±c·gain after the activation
and its gain, as NVIDIA's ``Conv2dLayer`` does (the skip is built without a clamp there).
Names follow NVIDIA's ``stylegan2-ada-pytorch`` (``b64.fromrgb.weight``, ``b4.fc.bias`` …).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from .stylegan2 import StyleGAN2Config
from .stylegan2_layers import Conv2dLayer, FullyConnected, fir_filter

SQRT_HALF = math.sqrt(0.5)


def minibatch_std(x: torch.Tensor, group_size: int, num_channels: int) -> torch.Tensor:
    """Append the standard deviation over groups of ``min(group_size, N)`` samples (sample ``i`` is in
    group ``i mod N/G``), averaged over ``C / num_channels`` channels and all pixels, as channels."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    if n % g:
        raise ValueError(f"the discriminator's batch ({n}) must be a multiple of its minibatch-std group ({g})")
    y = x.reshape(g, -1, num_channels, c // num_channels, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0)  # variance over the group
    y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [N/G, F]
    y = y.reshape(-1, num_channels, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block at ``resolution``: channels(r) → channels(r/2), output at r/2."""

    def __init__(self, config: StyleGAN2Config, resolution: int) -> None:
        super().__init__()
        tmp, out, clamp = config.channels(resolution), config.channels(resolution // 2), config.conv_clamp
        if resolution == config.resolution:
            self.fromrgb = Conv2dLayer(3, tmp, 1, conv_clamp=clamp)
        self.conv0 = Conv2dLayer(tmp, tmp, 3, conv_clamp=clamp)
        self.conv1 = Conv2dLayer(tmp, out, 3, down=True, conv_clamp=clamp)
        # NVIDIA's 1×1 skip has no clamp even when every other layer clamps (conv_clamp = 256 in train.py)
        self.skip = Conv2dLayer(tmp, out, 1, bias=False, activate=False, down=True)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        if x is None:
            x = self.fromrgb(img, f)
        y = self.skip(x, f, gain=SQRT_HALF)
        x = self.conv1(self.conv0(x, f), f, gain=SQRT_HALF)
        return y + x


class DiscriminatorEpilogue(nn.Module):
    """At 4×4: minibatch std, 3×3 conv, dense layer, linear logit."""

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        c = config.channels(4)
        self.group_size, self.num_channels = config.mbstd_group_size, config.mbstd_channels
        self.conv = Conv2dLayer(c + self.num_channels, c, 3, conv_clamp=config.conv_clamp)
        self.fc = FullyConnected(c * 16, c, activate=True)
        self.out = FullyConnected(c, 1)

    def forward(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        if self.num_channels > 0:
            x = minibatch_std(x, self.group_size, self.num_channels)
        x = self.conv(x, f)
        return self.out(self.fc(x.flatten(1)))


class StyleGAN2Discriminator(nn.Module):
    """Images ``[N, 3, R, R]`` (in [-1, 1]) → realness logits ``[N, 1]``."""

    kind = "stylegan2"  # a pack's discriminator_kind

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        if config.resolution < 8:
            raise ConfigError("the StyleGAN2 discriminator needs a resolution of at least 8")
        self.config = config
        self.resolutions = config.block_resolutions[:0:-1]  # R, R/2, …, 8
        for res in self.resolutions:
            self.add_module(f"b{res}", DiscriminatorBlock(config, res))
        self.b4 = DiscriminatorEpilogue(config)
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        res = self.config.resolution
        if img.ndim != 4 or tuple(img.shape[1:]) != (3, res, res):
            raise ValueError(f"expected images [N, 3, {res}, {res}], got {list(img.shape)}")
        x, f = None, self.resample_filter
        for r in self.resolutions:
            x = getattr(self, f"b{r}")(x, img.to(torch.promote_types(img.dtype, torch.float32)), f)
        return self.b4(x, f)
