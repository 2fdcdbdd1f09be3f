"""StyleGAN2 generator (config F), the third kind behind the engine's ``CodeGenerator`` interface.

z ``[N, z_dim]`` → normalise → ``mapping_layers`` dense layers (lr ×0.01) → w, broadcast to
W+ ``[N, num_ws, w_dim]`` (num_ws = 2·log2 R − 2) → optional truncation towards ``w_avg``.
Synthesis: a learned 4×4 constant, then per resolution two 3×3 modulated convolutions (the first
upsamples 2× with the FIR [1, 3, 3, 1] filter) with per-pixel noise and bias + leaky ReLU, and a
1×1 toRGB whose outputs are summed over resolutions (the "skip" architecture).

Parameter and buffer names follow NVIDIA's ``stylegan2-ada-pytorch`` (``mapping.fc0.weight``,
``synthesis.b8.conv0.affine.bias``, ``synthesis.b8.conv0.noise_const`` …) without its fixed
``resample_filter`` buffers; ``idinvert.formats`` maps NVIDIA and rosinality files onto them.
Codes are W+: every synthesis layer and toRGB reads its own row, as in NVIDIA's code.

``conv_clamp`` c (256 in every configuration of NVIDIA's ``train.py``): each synthesis layer and toRGB
clamps its output to ±c after the bias, the activation and its gain — NVIDIA's ``bias_act(…, clamp=c)``.
Everything is computed in float32 on every device. NVIDIA runs its top ``num_fp16_res`` blocks in
float16 unless ``force_fp32=True`` (the clamp keeps them in float16's range); the float32 result here is
its ``force_fp32=True`` output, which differs from the float16 one by float16 rounding only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .base import NOISE_MODES, CodeGenerator
from .stylegan2_layers import FullyConnected, bias_act, fir_filter, fused_modconv_pays, modulated_conv2d, upsample2d


@dataclass(frozen=True)
class StyleGAN2Config:
    """StyleGAN2 generator and discriminator (NVIDIA's names in brackets; defaults of config F)."""

    resolution: int = 1024  # img_resolution R = 2^k, 4 … 1024
    z_dim: int = 512  # z_dim
    w_dim: int = 512  # w_dim: C of each W+ row (also the mapping network's hidden width)
    mapping_layers: int = 8  # mapping_kwargs.num_layers
    mapping_lr_mul: float = 0.01  # mapping_kwargs.lr_multiplier
    channel_base: int = 32768  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512  # channel_max
    conv_clamp: float | None = None  # conv_clamp: conv/toRGB outputs clamped to ±this after act·gain (None: off)
    mbstd_group_size: int = 4  # D epilogue_kwargs.mbstd_group_size
    mbstd_channels: int = 1  # D epilogue_kwargs.mbstd_num_channels (0: no minibatch std)
    truncation_psi: float = 1.0  # ψ used when sampling from z (1 = off)
    truncation_layers: int | None = None  # truncation_cutoff: rows truncated (None = all)

    def __post_init__(self) -> None:
        res = self.resolution
        if not isinstance(res, int) or res < 4 or res > 1024 or res & (res - 1):
            raise ConfigError(f"StyleGAN2Config.resolution must be a power of two from 4 to 1024, got {res}")
        for name, low, high in (("z_dim", 1, 4096), ("w_dim", 1, 4096), ("mapping_layers", 1, 16),
                                ("channel_base", 1, 1 << 20), ("channel_max", 1, 4096),
                                ("mbstd_group_size", 1, 64), ("mbstd_channels", 0, 16)):
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"StyleGAN2Config.{name} must be an integer from {low} to {high}, got {value!r}")
        if not 0 < self.mapping_lr_mul <= 1:
            raise ConfigError(f"StyleGAN2Config.mapping_lr_mul must be in (0, 1], got {self.mapping_lr_mul}")
        if self.conv_clamp is not None and not 0 < self.conv_clamp <= 1e6:
            raise ConfigError(f"StyleGAN2Config.conv_clamp must be None or in (0, 1e6], got {self.conv_clamp}")
        if not -2 <= self.truncation_psi <= 2:
            raise ConfigError(f"StyleGAN2Config.truncation_psi must be in [-2, 2], got {self.truncation_psi}")
        if self.truncation_layers is not None and not 1 <= self.truncation_layers <= self.num_ws:
            raise ConfigError(f"StyleGAN2Config.truncation_layers must be None or 1 to {self.num_ws}, "
                              f"got {self.truncation_layers}")

    @property
    def log2_resolution(self) -> int:
        return int(math.log2(self.resolution))

    @property
    def num_ws(self) -> int:
        """Rows of a W+ code: one per synthesis layer and one for the last toRGB."""
        return 2 * self.log2_resolution - 2

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, self.log2_resolution + 1)]

    def channels(self, resolution: int) -> int:
        return min(self.channel_base // resolution, self.channel_max)

    def layer_resolution(self, index: int) -> int:
        """The resolution W+ row ``index`` acts at: row 0 drives the 4 px conv1; row 2i − 1 the conv0
        that upsamples to 2^(i+2) (and the toRGB below it), row 2i that resolution's conv1; the last
        row only the final toRGB (at R)."""
        return min(2 ** ((index + 1) // 2 + 2), self.resolution)


def channel_layout(widths: dict[int, int]) -> tuple[int, int] | None:
    """The smallest ``(channel_base, channel_max)`` giving ``widths`` {resolution: channels} as
    ``min(channel_base // r, channel_max)``, or None when no pair does."""
    top, cmax = max(widths), max(widths.values())
    for base in range(widths[top] * top, (widths[top] + 1) * top):
        if all(min(base // r, cmax) == c for r, c in widths.items()):
            return base, cmax
    return None


class MappingNetwork(nn.Module):
    """z ``[N, z_dim]`` → w ``[N, w_dim]``; holds ``w_avg``, the running mean of w."""

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        widths = [config.z_dim] + [config.w_dim] * config.mapping_layers
        for i in range(config.mapping_layers):
            self.add_module(f"fc{i}", FullyConnected(widths[i], widths[i + 1], activate=True,
                                                     lr_mul=config.mapping_lr_mul))
        self.register_buffer("w_avg", torch.zeros(config.w_dim))
        self.depth = config.mapping_layers

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z.to(torch.promote_types(z.dtype, torch.float32))  # float32 as NVIDIA's; float64 stays
        x = x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()  # normalise the second moment
        for i in range(self.depth):
            x = getattr(self, f"fc{i}")(x)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3×3 convolution (optionally upsampling), noise, bias and leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: bool,
                 conv_clamp: float | None) -> None:
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.up, self.conv_clamp = up, conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, noise_mode: str,
                fused: bool | None = None) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight.to(x.dtype), self.affine(w), demodulate=True, up=self.up, f=f,
                             fused=fused)
        if noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        elif noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, *x.shape[2:], dtype=x.dtype, device=x.device) * self.noise_strength
        return bias_act(x, self.bias, activate=True, clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1×1 convolution to RGB, without demodulation."""

    def __init__(self, in_channels: int, w_dim: int, *, conv_clamp: float | None) -> None:
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(3, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(3))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool | None = None) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight.to(x.dtype), styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias, activate=False, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: ``const`` (4×4) or ``conv0`` (upsampling), then ``conv1`` and ``torgb``."""

    def __init__(self, config: StyleGAN2Config, resolution: int) -> None:
        super().__init__()
        out_c, clamp = config.channels(resolution), config.conv_clamp
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_c, 4, 4))
        else:
            self.conv0 = SynthesisLayer(config.channels(resolution // 2), out_c, config.w_dim, resolution,
                                        up=True, conv_clamp=clamp)
        self.conv1 = SynthesisLayer(out_c, out_c, config.w_dim, resolution, up=False, conv_clamp=clamp)
        self.torgb = ToRGBLayer(out_c, config.w_dim, conv_clamp=clamp)
        self.resolution = resolution


class SynthesisNetwork(nn.Module):
    """W+ ``[N, num_ws, w_dim]`` → image ``[N, 3, R, R]`` (raw output, not clipped)."""

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.resolutions = config.block_resolutions
        for res in self.resolutions:
            self.add_module(f"b{res}", SynthesisBlock(config, res))
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", fused_modconv: bool | None = None) -> torch.Tensor:
        f, img, x = self.resample_filter, None, None
        fused = fused_modconv_pays(ws.shape[0], torch.is_grad_enabled()) if fused_modconv is None else fused_modconv
        for i, res in enumerate(self.resolutions):
            block = getattr(self, f"b{res}")
            if res == 4:
                x = block.const.to(ws.dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
                x = block.conv1(x, ws[:, 0], f, noise_mode, fused)
            else:  # rows 2i − 1 and 2i; the toRGB of a block shares its row with the next block's conv0
                x = block.conv0(x, ws[:, 2 * i - 1], f, noise_mode, fused)
                x = block.conv1(x, ws[:, 2 * i], f, noise_mode, fused)
            y = block.torgb(x, ws[:, 2 * i + 1], fused)
            img = y if img is None else upsample2d(img, f) + y
        return img


class StyleGAN2Generator(CodeGenerator):
    """StyleGAN2 as a ``CodeGenerator``: codes are W+ ``[N, num_ws, w_dim]``."""

    kind = "stylegan2"

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config)
        self.synthesis = SynthesisNetwork(config)

    @property
    def num_layers(self) -> int:
        return self.config.num_ws

    @property
    def w_dim(self) -> int:
        return self.config.w_dim

    def synthesize(self, codes: torch.Tensor, *, noise_mode: str = "const",
                   fused_modconv: bool | None = None) -> torch.Tensor:
        """Images ``[N, 3, R, R]`` from W+ codes ``[N, num_ws, w_dim]``; noise ``const`` (the stored
        ``noise_const`` maps), ``random`` (fresh N(0, 1) maps) or ``none``. ``fused_modconv``: the
        modulated convolutions' path (True: per-sample weights, False: scaled activations, None: the
        faster for this batch size and grad mode; equal results within float rounding)."""
        self.check_codes(codes)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        return self.synthesis(codes, noise_mode, fused_modconv)

    def sample_codes(self, z: torch.Tensor, *, truncation_psi: float | None = None,
                     truncation_layers: int | None = None) -> torch.Tensor:
        """W+ codes from z ``[N, z_dim]``: ``w`` in every row, rows ``< truncation_layers`` moved to
        ``w_avg + ψ·(w − w_avg)``."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected z [N, {self.z_dim}], got {list(z.shape)}")
        psi = self.config.truncation_psi if truncation_psi is None else truncation_psi
        cutoff = self.config.truncation_layers if truncation_layers is None else truncation_layers
        ws = self.mapping(z).unsqueeze(1).repeat(1, self.num_ws, 1)
        if psi != 1:
            cutoff = self.num_ws if cutoff is None else cutoff
            w_avg = self.mapping.w_avg.to(ws.dtype)
            ws = torch.cat([w_avg.lerp(ws[:, :cutoff], psi), ws[:, cutoff:]], dim=1)
        return ws

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    def mean_code(self) -> torch.Tensor:
        return self.mapping.w_avg.unsqueeze(0).repeat(self.num_ws, 1)

    @torch.no_grad()
    def update_w_avg(self, ws: torch.Tensor, beta: float) -> None:
        """EMA of row 0 of W+ codes ``[N, num_ws, w_dim]`` (``w_avg_beta``, 0.995 in training)."""
        w_avg = self.mapping.w_avg
        w_avg.lerp_(ws[:, 0].mean(dim=0).to(w_avg.dtype), 1.0 - beta)
