"""Paste-back: a generated face warped into the photo with the inverse alignment, under a soft mask over
the jaw-and-brows hull; pixels outside the mask stay bit for bit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from ..errors import ImageError
from .detection import BROWS, JAW, DetectedFace
from .geometry import apply_matrix, as_rgb_array, photo_region, resample, scale_matrix, shrink_image, translate
from .transform import FaceAlignment


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Monotone chain: hull vertices in order."""
    pts = sorted(map(tuple, np.asarray(points, dtype=np.float64)))
    cross = lambda o, a, b: (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])  # noqa: E731
    lower: list = []
    upper: list = []
    for seq, chain in ((pts, lower), (pts[::-1], upper)):
        for p in seq:
            while len(chain) >= 2 and cross(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
    return np.array(lower[:-1] + upper[:-1])


def _mask_outline(face: DetectedFace, forehead: float) -> np.ndarray:
    """Jaw and brows, the brows raised by ``forehead`` × the eye-to-mouth distance."""
    lm = face.landmarks
    el, er, mouth = face.key_points()
    up = (el + er) / 2 - mouth  # from the mouth towards the eyes
    return _convex_hull(np.concatenate([lm[JAW], lm[BROWS] + forehead * up]))


@dataclass(frozen=True)
class PasteConfig:
    """The blending mask, in units of the face scale (``DetectedFace.size``)."""

    dilate: float = 0.1  # grow the jaw-and-brows hull by this much
    feather: float = 0.08  # Gaussian σ of the soft edge
    forehead: float = 0.3  # raise the brows by this fraction of the eye-to-mouth distance


def face_mask(alignment: FaceAlignment, config: PasteConfig = PasteConfig()) -> np.ndarray:
    """``[H, W]`` float32 blending weights in [0, 1] over the whole photo; exactly 0 far from the face."""
    w, h = alignment.photo_size
    mask = np.zeros((h, w), dtype=np.float32)
    (x0, y0, x1, y1), region = _mask_region(alignment, config)
    mask[y0:y1, x0:x1] = region
    return mask


def _mask_region(alignment: FaceAlignment, config: PasteConfig) -> tuple[tuple[int, int, int, int], np.ndarray]:
    face, size = alignment.face, alignment.framing.size
    unit = face.size
    hull = _mask_outline(face, config.forehead)
    grow, sigma = config.dilate * unit, max(config.feather * unit, 0.5)
    w, h = alignment.photo_size
    box = photo_region(w, h, hull, grow + 4 * sigma + 2)
    x0, y0, x1, y1 = box
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(canvas)
    pts = [(float(x) - x0 - 0.5, float(y) - y0 - 0.5) for x, y in hull]
    draw.polygon(pts, fill=255)
    if grow >= 0.5:  # dilation: a disc around every vertex and a thick line along every edge
        for x, y in pts:
            draw.ellipse((x - grow, y - grow, x + grow, y + grow), fill=255)
        draw.line(pts + pts[:1], fill=255, width=max(1, round(2 * grow)))
    soft = np.asarray(canvas.filter(ImageFilter.GaussianBlur(sigma)), dtype=np.float32) / 255.0
    # Fade out towards the edges of the crop square, where the generated face ends.
    ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
    uv = apply_matrix(alignment.matrix, np.stack([xs.ravel(), ys.ravel()], -1)).reshape(y1 - y0, x1 - x0, 2)
    edge = np.minimum(np.minimum(uv[..., 0], size - uv[..., 0]), np.minimum(uv[..., 1], size - uv[..., 1]))
    ramp = max(1.0, 2 * sigma / alignment.scale)  # crop pixels
    return box, soft * np.clip(edge / ramp, 0.0, 1.0).astype(np.float32)


def paste_back(photo: Image.Image | np.ndarray, face: torch.Tensor, alignment: FaceAlignment,
               config: PasteConfig = PasteConfig()) -> Image.Image:
    """The photo at its original size with ``face [3, R, R]`` (in [-1, 1]) blended in.

    ``face`` is warped with the inverse alignment (any R: it is rescaled to the framing) and
    blended under ``face_mask``; pixels where the mask is 0 are returned bit for bit.
    """
    rgb = as_rgb_array(photo)
    if (rgb.shape[1], rgb.shape[0]) != tuple(alignment.photo_size):
        raise ImageError(f"the photo is {rgb.shape[1]}×{rgb.shape[0]} but the face was aligned in a "
                         f"{alignment.photo_size[0]}×{alignment.photo_size[1]} photo")
    if face.ndim != 3 or face.shape[0] != 3 or face.shape[1] != face.shape[2]:
        raise ValueError(f"expected one square face [3, R, R], got {list(face.shape)}")
    (x0, y0, x1, y1), mask = _mask_region(alignment, config)
    out = rgb.copy()
    if not mask.any():
        return Image.fromarray(out)
    src = face.detach().float().cpu()
    r = src.shape[-1]
    to_face = scale_matrix(r / alignment.framing.size, r / alignment.framing.size) @ alignment.matrix @ translate(x0, y0)
    density = r / alignment.framing.size / alignment.scale  # face pixels per photo pixel
    if density > 1:
        src, shrink = shrink_image(src, density)
        to_face = shrink @ to_face
    warped = (resample(src, to_face, x1 - x0, y1 - y0, padding="border").clamp(-1, 1) + 1.0) * 127.5
    warped = warped.permute(1, 2, 0).numpy()
    old = rgb[y0:y1, x0:x1].astype(np.float32)
    blended = np.clip(np.floor(old + (warped - old) * mask[..., None] + 0.5), 0, 255).astype(np.uint8)
    inside = mask > 0
    out[y0:y1, x0:x1][inside] = blended[inside]
    return Image.fromarray(out)
