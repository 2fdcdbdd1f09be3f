"""Pixel geometry shared by detection, alignment and paste-back: photos as arrays, 3×3 matrices on
continuous pixel coordinates (origin at the top-left corner, pixel centres at +0.5), resampling."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..images import to_rgb


def as_rgb_array(photo: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(photo, Image.Image):
        array = np.asarray(to_rgb(photo))
    elif isinstance(photo, np.ndarray) and photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3:
        array = photo
    else:
        raise TypeError("photo must be a PIL image or a uint8 array [H, W, 3]")
    return np.ascontiguousarray(array)


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def scale_matrix(sx: float, sy: float) -> np.ndarray:
    return np.diag([sx, sy, 1.0])


def resample(src: torch.Tensor, dst_to_src: np.ndarray, width: int, height: int, *,
            padding: str) -> torch.Tensor:
    """``[C, height, width]``: ``src [C, h, w]`` read at ``dst_to_src`` of every output pixel centre."""
    _, h, w = src.shape
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                            torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    m = torch.from_numpy(dst_to_src)
    sx, sy = m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    grid = torch.stack([sx * (2.0 / w) - 1.0, sy * (2.0 / h) - 1.0], dim=-1).to(src.dtype)
    return F.grid_sample(src[None], grid[None], mode="bicubic", padding_mode=padding, align_corners=False)[0]


def shrink_image(src: torch.Tensor, factor: float) -> tuple[torch.Tensor, np.ndarray]:
    """Antialiased downscale by ``factor`` and the matrix from old to new pixel coordinates."""
    _, h, w = src.shape
    nh, nw = max(1, round(h / factor)), max(1, round(w / factor))
    out = F.interpolate(src[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    return out, scale_matrix(nw / w, nh / h)


def photo_region(w: int, h: int, corners: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1) around ``corners`` (photo pixels) clipped to the photo."""
    x0 = min(max(0, math.floor(corners[:, 0].min() - margin)), w - 1)
    y0 = min(max(0, math.floor(corners[:, 1].min() - margin)), h - 1)
    x1 = max(min(w, math.ceil(corners[:, 0].max() + margin)), x0 + 1)
    y1 = max(min(h, math.ceil(corners[:, 1].max() + margin)), y0 + 1)
    return x0, y0, x1, y1
