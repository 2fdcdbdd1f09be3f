"""Building blocks of StyleGAN2 (Karras et al., CVPR 2020), config F, in plain PyTorch.

The FIR resampling ``upfirdn2d`` (zero-insertion upsampling, padding, a 2-D filter, decimation)
and the layers of NVIDIA's ``stylegan2-ada-pytorch`` are written here from their definitions, so
the networks run on any device without compiled kernels. Weights are stored as NVIDIA stores them
(equalized learning rate: raw N(0, 1) weights, gains applied at run time), which is also how
rosinality's ``stylegan2-pytorch`` stores them, so both formats map onto these layers by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # keeps the activations' second moment through leaky ReLU
FIR_TAPS = (1.0, 3.0, 3.0, 1.0)  # the binomial low-pass filter of every resampling step


def fir_filter(taps: tuple[float, ...] = FIR_TAPS) -> torch.Tensor:
    """The separable 2-D filter ``outer(taps, taps)`` normalised to sum 1, ``[k, k]``."""
    t = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(t, t)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, *, up: int = 1, down: int = 1,
              pad: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Upsample by inserting ``up − 1`` zeros, pad (x0, x1, y0, y1; negative crops), convolve every
    channel with ``f · gain`` and keep every ``down``-th pixel. ``x`` is ``[N, C, H, W]``."""
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    px0, px1, py0, py1 = pad
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0):x.shape[2] - max(-py1, 0), max(-px0, 0):x.shape[3] - max(-px1, 0)]
    # A true convolution: conv2d correlates, so the filter is flipped (a no-op for symmetric filters).
    kernel = (f * gain).flip([0, 1]).to(x.dtype)
    x = F.conv2d(x, kernel[None, None].repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::down, ::down]


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2× FIR upsampling (the skip image between resolutions)."""
    k = f.shape[-1]
    return upfirdn2d(x, f, up=2, pad=((k + 1) // 2, (k - 2) // 2) * 2, gain=4.0)


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, *, activate: bool, gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """``x + b``, then leaky ReLU · √2 when ``activate``, times ``gain``, clamped to ±``clamp``."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    if activate:
        x = F.leaky_relu(x, LRELU_SLOPE)
    scale = (LRELU_GAIN if activate else 1.0) * gain
    if scale != 1.0:
        x = x * scale
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


class FullyConnected(nn.Module):
    """Equalized-lr dense layer: ``x (W·lr_mul/√in)ᵀ + b·lr_mul``, optionally with leaky ReLU."""

    def __init__(self, in_features: int, out_features: int, *, activate: bool = False, lr_mul: float = 1.0,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain
        if not self.activate:
            return F.linear(x, w, b)
        return bias_act(F.linear(x, w), b, activate=True)


def fused_modconv_pays(batch: int, grad: bool) -> bool:
    """Whether the grouped-convolution path of ``modulated_conv2d`` is the faster one on a CPU.

    Only for one sample without autograd: its grouped convolution is a plain one with one modulated
    weight, cheaper than scaling the activations before and after (0.89× the time at 256 px, about
    even at 64 px). With a batch, or a backward pass to come, scaling the activations wins: 0.60–0.74×
    the time of the fused path for the 64 px distill student at batch 8 and 32, 0.79× at 256 px,
    batch 32, forward + backward, and it keeps no per-sample weights for the backward pass
    (``benchmarks/stylegan2_modconv.py``, ``benchmarks/results/stylegan2_modconv_cpu.md``).
    """
    return batch == 1 and not grad


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool,
                     up: bool = False, f: torch.Tensor | None = None, fused: bool | None = None) -> torch.Tensor:
    """StyleGAN2's modulated convolution.

    ``x`` ``[N, I, H, W]``, ``weight`` ``[O, I, k, k]``, ``styles`` ``[N, I]``. The weight is scaled by
    each sample's styles, then (``demodulate``) every output filter is normalised to unit norm.
    ``up``: a stride-2 transposed convolution followed by the FIR filter ``f`` (2× upsampling).
    ``fused`` (NVIDIA's ``fused_modconv``): True builds every sample's weight and runs one grouped
    convolution; False scales the activations by the styles before a convolution with the shared
    weight and by the demodulation coefficients after it (the same maths, no per-sample weights);
    None picks the faster path for this batch size and grad mode (``fused_modconv_pays``).
    """
    n, in_c = x.shape[:2]
    if styles.shape != (n, in_c) or weight.shape[1] != in_c:
        raise ValueError(f"expected x [N, I, H, W], weight [O, I, k, k], styles [N, I]; got {list(x.shape)}, "
                         f"{list(weight.shape)}, {list(styles.shape)}")
    if fused is None:
        fused = fused_modconv_pays(n, torch.is_grad_enabled())
    if fused:
        return _modconv_grouped(x, weight, styles, demodulate=demodulate, up=up, f=f)
    x = x * styles.reshape(n, in_c, 1, 1)
    x = _conv(x, weight, up=up, f=f)
    if demodulate:  # ‖s ⊙ W_o‖² = Σ_i s_i² Σ_k W_oik²: the per-sample weights are never built
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).T + 1e-8).rsqrt()  # [N, O]
        x = x * dcoefs.reshape(n, -1, 1, 1)
    return x


def _modconv_grouped(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool,
                     up: bool, f: torch.Tensor | None) -> torch.Tensor:
    """The fused path: per-sample weights ``[N, O, I, k, k]``, one convolution with N groups."""
    n = x.shape[0]
    out_c, in_c, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(n, 1, in_c, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, out_c, 1, 1, 1)
    x = _conv(x.reshape(1, n * in_c, *x.shape[2:]), w.reshape(n * out_c, in_c, kh, kw), up=up, f=f, groups=n)
    return x.reshape(n, out_c, *x.shape[2:])


def _conv(x: torch.Tensor, weight: torch.Tensor, *, up: bool, f: torch.Tensor | None,
          groups: int = 1) -> torch.Tensor:
    """A 'same' convolution with ``weight`` ``[G·O, I, k, k]``, or (``up``) a stride-2 transposed one
    followed by the FIR filter ``f``: exactly 2H × 2W."""
    kh = weight.shape[-1]
    if not up:
        return F.conv2d(x, weight, padding=kh // 2, groups=groups)
    out_c, in_c = weight.shape[0] // groups, weight.shape[1]
    # transposed convolution: the weight's [O, I] of every group become [I, O]
    w = weight.reshape(groups, out_c, in_c, kh, kh).transpose(1, 2).reshape(groups * in_c, out_c, kh, kh)
    x = F.conv_transpose2d(x, w, stride=2, groups=groups)  # [N, G·O, 2H + k − 2, 2W + k − 2]
    # Pad so that the FIR output is exactly 2H × 2W (1 on each side for k = 3 and a 4-tap filter).
    p0 = kh // 2 + (f.shape[-1] + 1) // 2 - (kh - 1)
    p1 = kh // 2 + (f.shape[-1] - 2) // 2 - (kh - 2)
    return upfirdn2d(x, f, pad=(p0, p1, p0, p1), gain=4.0)


class Conv2dLayer(nn.Module):
    """Equalized-lr convolution of the discriminator, optionally FIR-downsampling by 2."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 activate: bool = True, down: bool = False, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.activate, self.down, self.conv_clamp = activate, down, conv_clamp

    def forward(self, x: torch.Tensor, f: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        k = w.shape[-1]
        if not self.down:
            x = F.conv2d(x, w, padding=k // 2)
        else:
            # Low-pass first, then subsample: by the 1×1 convolution's stride-free decimation or a stride-2 conv.
            p0, p1 = k // 2 + (f.shape[-1] - 1) // 2, k // 2 + (f.shape[-1] - 2) // 2
            if k == 1:
                x = F.conv2d(upfirdn2d(x, f, down=2, pad=(p0, p1, p0, p1)), w)
            else:
                x = F.conv2d(upfirdn2d(x, f, pad=(p0, p1, p0, p1)), w, stride=2)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, activate=self.activate, gain=gain, clamp=clamp)
