"""StyleGAN-v1 generator with the per-layer W+ mapping of IDInvert (spec §1).

The mapping network's last layer outputs all ``L`` rows of the code at once (``[N, L, C]``);
there is no broadcast of a single ``w``. Synthesis from a W+ code bypasses truncation, so
inversion and editing work on raw codes. State_dict keys match the official port exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import NOISE_MODES, CodeGenerator
from .config import GeneratorConfig
from .derived import derived
from .layers import (LRELU_SLOPE, Blur, DenseLayer, WeightHolder, instance_norm, pixel_norm, upsample_conv,
                     upsample_kernel)


class MappingNetwork(nn.Module):
    """z ``[N, z_dim]`` → W+ ``[N, L, C]``: pixel norm, then dense layers, each with lrelu."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.num_layers, self.w_dim = config.num_layers, config.w_dim
        widths = [config.z_dim] + [config.mapping_fmaps] * (config.mapping_layers - 1)
        widths.append(config.num_layers * config.w_dim)
        for i in range(config.mapping_layers):
            self.add_module(f"dense{i}", DenseLayer(widths[i], widths[i + 1], lr_mul=config.mapping_lr_mul))
        self.depth = config.mapping_layers

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(z)
        for i in range(self.depth):
            x = getattr(self, f"dense{i}")(x)
        return x.view(-1, self.num_layers, self.w_dim)


class Truncation(nn.Module):
    """``w' = w_avg + (w − w_avg)·ψ`` on the first ``layers`` rows; used only when sampling from z."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.register_buffer("w_avg", torch.zeros(config.w_dim))

    def forward(self, wp: torch.Tensor, psi: float, layers: int) -> torch.Tensor:
        coef = torch.ones(1, wp.shape[1], 1, dtype=wp.dtype, device=wp.device)
        coef[:, :layers] = psi
        return torch.lerp(self.w_avg.view(1, 1, -1).to(wp.dtype), wp, coef)


class NoiseInput(nn.Module):
    """Per-channel scaled noise (keys ``apply_noise.weight`` and the fixed ``apply_noise.noise``)."""

    def __init__(self, channels: int, resolution: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))
        self.register_buffer("noise", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, noise_mode: str) -> torch.Tensor:
        if noise_mode == "none":
            return x
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], dtype=x.dtype, device=x.device)
        else:
            noise = self.noise.to(x.dtype)
        return x + noise * self.weight.view(1, -1, 1, 1).to(x.dtype)


class StyleMod(nn.Module):
    """AdaIN modulation: ``x·(s₀ + 1) + s₁`` with ``s = dense(w)`` (gain 1, no activation)."""

    def __init__(self, channels: int, w_dim: int) -> None:
        super().__init__()
        self.dense = DenseLayer(w_dim, 2 * channels, gain=1.0, activate=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.dense(w).view(-1, 2, x.shape[1], 1, 1)
        return x * (style[:, 0] + 1) + style[:, 1]


class Epilogue(nn.Module):
    """After every synthesis conv, in this order: noise → bias → lrelu → instance norm → style."""

    def __init__(self, channels: int, resolution: int, w_dim: int) -> None:
        super().__init__()
        self.apply_noise = NoiseInput(channels, resolution)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style_mod = StyleMod(channels, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        x = self.apply_noise(x, noise_mode)
        x = F.leaky_relu(x + self.bias.view(1, -1, 1, 1), LRELU_SLOPE)
        return self.style_mod(instance_norm(x), w)


class ConstLayer(nn.Module):
    """Layer 0: the learned 4×4 constant (``const``, initialised to ones) and its epilogue."""

    def __init__(self, channels: int, w_dim: int) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.ones(1, channels, 4, 4))
        self.epilogue = Epilogue(channels, 4, w_dim)

    def forward(self, x: torch.Tensor | None, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        return self.epilogue(self.const.expand(w.shape[0], -1, -1, -1).to(w.dtype), w, noise_mode)


class ConvLayer(nn.Module):
    """3×3 convolution (no bias, ``c = √2/√(in·9)``) at constant resolution, then the epilogue."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int, w_dim: int) -> None:
        super().__init__()
        self.conv = WeightHolder(out_channels, in_channels, 3, 3)
        self.scale = math.sqrt(2.0) / math.sqrt(in_channels * 9)
        self.epilogue = Epilogue(out_channels, resolution, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        weight = derived(self, "weight", lambda: self.conv.weight * self.scale, self.conv.weight)
        return self.epilogue(F.conv2d(x, weight, padding=1), w, noise_mode)


class UpConvLayer(nn.Module):
    """×2 upsampling 3×3 convolution, blur, epilogue.

    ``fused=True`` stores the official TF-layout kernel ``weight [3, 3, in, out]`` (used from 128
    on); ``fused=False`` stores ``conv.weight [out, in, 3, 3]`` for nearest upsampling followed by
    that convolution. Both are computed as one transposed convolution: nearest ×2 + conv(K)
    equals the fused up-conv of the flipped kernel, and costs 2.25× fewer multiplications.
    """

    def __init__(self, in_channels: int, out_channels: int, resolution: int, w_dim: int, *, fused: bool) -> None:
        super().__init__()
        self.fused = fused
        if fused:
            self.weight = nn.Parameter(torch.randn(3, 3, in_channels, out_channels))
        else:
            self.conv = WeightHolder(out_channels, in_channels, 3, 3)
        self.scale = math.sqrt(2.0) / math.sqrt(in_channels * 9)
        self.blur = Blur(out_channels)
        self.epilogue = Epilogue(out_channels, resolution, w_dim)

    def kernel_hwio(self) -> torch.Tensor:
        if self.fused:
            return self.weight * self.scale
        return self.conv.weight.flip(2, 3).permute(2, 3, 1, 0) * self.scale

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        source = self.weight if self.fused else self.conv.weight
        kernel = derived(self, "kernel", lambda: upsample_kernel(self.kernel_hwio()), source)
        x = self.blur(upsample_conv(x, kernel=kernel))
        return self.epilogue(x, w, noise_mode)


class ToRGB(nn.Module):
    """1×1 convolution to RGB (``conv.weight [3, C, 1, 1]`` × 1/√C) plus ``bias [3]``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = WeightHolder(out_channels, in_channels, 1, 1)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = derived(self, "weight", lambda: self.conv.weight * self.scale, self.conv.weight)
        return F.conv2d(x, weight, self.bias)


class SynthesisNetwork(nn.Module):
    """W+ ``[N, L, C]`` → image ``[N, 3, R, R]``; layer ``i`` reads row ``i`` of the code.

    ``lod`` (level of detail, the progressive-growing remnant stored as ``synthesis.lod``)
    selects the output resolution ``R / 2^floor(lod)``; a fractional part blends in the
    next lower resolution, upsampled, as during progressive training. Trained models have
    ``lod = 0``, which is the only path the released weights use.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.num_layers = config.num_layers
        self.lod = nn.Parameter(torch.zeros(()), requires_grad=False)
        for i in range(config.num_layers):
            res = config.layer_resolution(i)
            out_ch = config.channels(res)
            in_ch = config.channels(res // 2) if i % 2 == 0 else out_ch
            if i == 0:
                layer = ConstLayer(out_ch, config.w_dim)
            elif i % 2 == 1:
                layer = ConvLayer(out_ch, out_ch, res, config.w_dim)
            else:
                fused = res >= config.fused_min_resolution
                layer = UpConvLayer(in_ch, out_ch, res, config.w_dim, fused=fused)
            self.add_module(f"layer{i}", layer)
        for k in range(config.log2_resolution - 1):
            self.add_module(f"output{k}", ToRGB(config.channels(4 * 2**k), config.image_channels))

    def forward(self, wp: torch.Tensor, *, noise_mode: str = "const", lod: float | None = None) -> torch.Tensor:
        if wp.ndim != 3 or wp.shape[1] != self.num_layers or wp.shape[2] != self.config.w_dim:
            raise ValueError(f"expected W+ codes [N, {self.num_layers}, {self.config.w_dim}], got {list(wp.shape)}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}")
        lod = float(self.lod.detach()) if lod is None else float(lod)
        max_level = self.config.log2_resolution - 2  # index of the full-resolution output
        level = max_level - int(math.floor(lod))  # output index of the current resolution
        if not 0 <= level <= max_level:
            raise ValueError(f"lod must be in [0, {max_level}], got {lod}")
        alpha = lod - math.floor(lod)  # weight of the next lower resolution
        x = None
        lower = None
        for i in range(2 * level + 2):
            x = getattr(self, f"layer{i}")(x, wp[:, i], noise_mode)
            if alpha > 0 and i == 2 * level - 1:
                lower = getattr(self, f"output{level - 1}")(x)
        image = getattr(self, f"output{level}")(x)
        if lower is not None:
            image = torch.lerp(image, F.interpolate(lower, scale_factor=2, mode="nearest"), alpha)
        return torch.tanh(image) if self.config.final_tanh else image


class StyleGANGenerator(CodeGenerator):
    """The IDInvert generator: ``mapping`` (z → W+), ``truncation`` and ``synthesis`` (W+ → image)."""

    kind = "stylegan"

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config)
        self.truncation = Truncation(config)
        self.synthesis = SynthesisNetwork(config)

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def w_dim(self) -> int:
        return self.config.w_dim

    def synthesize(self, codes: torch.Tensor, *, noise_mode: str = "const") -> torch.Tensor:
        return self.synthesis(codes, noise_mode=noise_mode)

    def sample_codes(self, z: torch.Tensor, *, truncation_psi: float | None = None,
                     truncation_layers: int | None = None) -> torch.Tensor:
        """W+ codes ``[N, L, C]`` from z, truncated (ψ = 1 disables truncation)."""
        psi = self.config.truncation_psi if truncation_psi is None else truncation_psi
        layers = self.config.truncation_layers if truncation_layers is None else truncation_layers
        wp = self.mapping(z)
        return wp if psi == 1.0 else self.truncation(wp, psi, layers)

    def mean_code(self) -> torch.Tensor:
        return self.truncation.w_avg.view(1, -1).expand(self.num_layers, -1)

    @torch.no_grad()
    def update_w_avg(self, wp: torch.Tensor, beta: float) -> None:
        """EMA of layer 0's code (``dlatent_avg``, β = 0.995 in StyleGAN training)."""
        self.truncation.w_avg.lerp_(wp[:, 0].mean(dim=0).to(self.truncation.w_avg.dtype), 1.0 - beta)
