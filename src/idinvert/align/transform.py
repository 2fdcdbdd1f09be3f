"""Alignment: one similarity transform per face onto a framing template (least squares on its points,
or the FFHQ recipe's oriented quad), and the antialiased warp that makes the crop (``align_faces``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError, ImageError
from .detection import EYE_LEFT, EYE_RIGHT, MOUTH_LEFT, MOUTH_RIGHT, DetectedFace, detect_faces, fit_points, key_points
from .framing import Framing
from .geometry import apply_matrix, as_rgb_array, photo_region, resample, scale_matrix, shrink_image, translate
from .models import LANDMARK_TERMS


def _similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The similarity ``x' = a·x − b·y + tx, y' = b·x + a·y + ty`` minimising the squared error."""
    n = len(src)
    rows = np.zeros((2 * n, 4))
    rows[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    rows[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, dst.reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty], [0.0, 0.0, 1.0]])


def _ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The FFHQ recipe's oriented square: centre c and half-axes x (right), y (down)."""
    eye_left, eye_right = landmarks[EYE_LEFT].mean(0), landmarks[EYE_RIGHT].mean(0)
    eye_mid, eye_to_eye = (eye_left + eye_right) / 2, eye_right - eye_left
    eye_to_mouth = (landmarks[MOUTH_LEFT] + landmarks[MOUTH_RIGHT]) / 2 - eye_mid
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])  # eye line and mouth direction turned
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    return eye_mid + eye_to_mouth * 0.1, x, y


def alignment_matrix(landmarks: np.ndarray, framing: Framing) -> np.ndarray:
    """``[3, 3]`` similarity from photo pixels to crop pixels for the 68 ``landmarks``."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (68, 2):
        raise ValueError(f"expected 68 landmarks [68, 2], got {list(landmarks.shape)}")
    if framing.rule == "ffhq":  # quad corners c ∓ x ∓ y → crop corners
        c, x, y = _ffhq_quad(landmarks)
        half = framing.size / 2
        linear = np.stack([x / (x @ x), y / (y @ y)]) * half
        return np.vstack([np.column_stack([linear, half - linear @ c]), [0.0, 0.0, 1.0]])
    return _similarity_lstsq(fit_points(landmarks, framing), framing.points())


def framing_positions(landmarks: np.ndarray, framing: Framing) -> np.ndarray:
    """``[3, 2]`` where eye_left, eye_right and mouth land in the unit square under ``framing``."""
    return apply_matrix(alignment_matrix(landmarks, framing), key_points(landmarks)) / framing.size


@dataclass(frozen=True)
class FaceAlignment:
    """The geometry of one aligned face: enough to paste a generated face back."""

    face: DetectedFace
    framing: Framing
    matrix: np.ndarray  # [3, 3] photo pixels → crop pixels
    photo_size: tuple[int, int]  # (width, height) of the photo

    @property
    def inverse(self) -> np.ndarray:
        """``[3, 3]`` crop pixels → photo pixels."""
        return np.linalg.inv(self.matrix)

    @property
    def scale(self) -> float:
        """Photo pixels per crop pixel (< 1: the crop is upsampled from a small face)."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix[:2, :2])))) ** -1

    @property
    def crop_landmarks(self) -> np.ndarray:
        """``[68, 2]`` landmarks in crop pixels."""
        return apply_matrix(self.matrix, self.face.landmarks)

    def to_dict(self) -> dict[str, Any]:
        r = lambda a: np.round(np.asarray(a, dtype=np.float64), 4).tolist()  # noqa: E731
        return {"photo_size": list(self.photo_size), "detector": self.face.detector,
                "score": round(self.face.score, 4), "box": list(self.face.box), "framing": self.framing.to_dict(),
                "matrix": self.matrix.tolist(), "inverse": self.inverse.tolist(), "scale": round(self.scale, 4),
                "landmarks": self.face.landmarks.tolist(), "crop_landmarks": r(self.crop_landmarks),
                "coordinates": "continuous pixels, origin at the top-left corner; pixel centres at +0.5",
                "landmark_terms": LANDMARK_TERMS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FaceAlignment":
        try:
            face = DetectedFace(np.array(data["landmarks"], dtype=np.float64), tuple(data["box"]),
                                data["detector"], float(data["score"]))
            alignment = cls(face, Framing.from_dict(data["framing"]), np.array(data["matrix"], dtype=np.float64),
                            tuple(int(v) for v in data["photo_size"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a face alignment record ({exc})") from None
        if alignment.face.landmarks.shape != (68, 2) or alignment.matrix.shape != (3, 3):
            raise ConfigError("not a face alignment record (landmarks must be [68, 2], matrix [3, 3])")
        return alignment


@dataclass
class AlignedFace:
    """An aligned crop and the geometry that made it."""

    image: torch.Tensor  # [3, S, S] in [-1, 1]
    alignment: FaceAlignment
    index: int  # the face's position in its photo, left to right


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``[C, H, W]`` blurred with a Gaussian of σ = ``sigma`` pixels (reflect at the borders)."""
    c = x.shape[0]
    radius = max(1, min(int(3 * sigma + 0.5), min(x.shape[-2:]) - 1))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def warp_photo(photo: Image.Image | np.ndarray, matrix: np.ndarray, size: int, *,
               supersample: int = 2) -> torch.Tensor:
    """``[3, size, size]`` in [-1, 1]: the photo seen through ``matrix`` (photo → crop pixels).

    Antialiased: the part of the photo under the crop is first shrunk (box filter, then
    antialiased bilinear) to ``supersample`` photo pixels per crop pixel, sampled bicubically at
    ``supersample`` × ``size`` and reduced to ``size``. Outside the photo the picture is
    reflected, then blurred and faded to the median colour with the distance from the photo's
    edge (the idea of the FFHQ recipe's padding).
    """
    rgb = as_rgb_array(photo)
    h, w = rgb.shape[:2]
    inverse = np.linalg.inv(matrix)
    scale = math.sqrt(abs(np.linalg.det(inverse[:2, :2])))  # photo pixels per crop pixel
    corners = apply_matrix(inverse, np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64))
    x0, y0, x1, y1 = photo_region(w, h, corners, 4 * max(scale, 1.0) + 2)
    pixels = rgb[y0:y1, x0:x1]
    to_region = translate(-x0, -y0) @ inverse @ scale_matrix(1 / supersample, 1 / supersample)
    factor = scale / supersample  # region pixels per sample
    if factor >= 2:  # integer box reduction in uint8 first: fast, and bounds the memory for big photos
        k = int(factor)
        pixels, factor = np.asarray(Image.fromarray(pixels).reduce(k)), factor / k
        to_region = scale_matrix(1 / k, 1 / k) @ to_region
    region = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 127.5 - 1.0
    if factor > 1:
        region, shrink = shrink_image(region, factor)
        to_region = shrink @ to_region
    out = resample(region, to_region, size * supersample, size * supersample, padding="reflection")
    if supersample > 1:
        out = F.interpolate(out[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0]
    return _soften_padding(out.clamp(-1.0, 1.0), inverse, w, h, scale, pixels)


def _soften_padding(out: torch.Tensor, inverse: np.ndarray, w: int, h: int, scale: float,
                    visible: np.ndarray) -> torch.Tensor:
    """Blur the reflected picture outside the photo and fade it to the median of ``visible``."""
    size = out.shape[-1]
    centres = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1).reshape(-1, 2)
    p = apply_matrix(inverse, centres)
    outside = np.hypot(np.maximum(0, np.maximum(-p[:, 0], p[:, 0] - w)),
                       np.maximum(0, np.maximum(-p[:, 1], p[:, 1] - h))) / scale  # crop pixels
    if outside.max() <= 0:
        return out
    d = torch.from_numpy(outside.reshape(1, size, size)).float()
    blurred = _gaussian_blur(out, max(0.5, 0.02 * size))
    out = out + (blurred - out) * (d / (0.03 * size)).clamp(0, 1)
    step = max(1, int(math.sqrt(visible.shape[0] * visible.shape[1] / 65536)))
    median = np.median(visible[::step, ::step].reshape(-1, 3), axis=0)
    fill = torch.from_numpy(median / 127.5 - 1.0).float().view(3, 1, 1)
    return out + (fill - out) * (d / (0.25 * size)).clamp(0, 1) * 0.8


def align_face(photo: Image.Image | np.ndarray, face: DetectedFace, framing: Framing, *,
               index: int = 0) -> AlignedFace:
    """One detected face → its aligned crop at ``framing.size``."""
    rgb = as_rgb_array(photo)
    matrix = alignment_matrix(face.landmarks, framing)
    alignment = FaceAlignment(face, framing, matrix, (rgb.shape[1], rgb.shape[0]))
    return AlignedFace(warp_photo(rgb, matrix, framing.size), alignment, index)


def align_faces(photo: Image.Image | np.ndarray, framing: Framing, *, face: int | None = None,
                detector: str = "auto", name: str = "photo") -> list[AlignedFace]:
    """All faces of a photo (left to right), or only face ``face``, aligned to ``framing``.

    Raises ``ImageError`` naming ``name`` when there is no face or ``face`` is out of range.
    """
    try:
        faces = detect_faces(photo, detector=detector)
    except ImageError as exc:
        raise ImageError(f"{name}: {exc}") from None
    if not faces:
        raise ImageError(f"{name}: no face found; use a photo where a face is visible and at least ~40 px wide")
    if face is not None and not -len(faces) <= face < len(faces):
        raise ImageError(f"{name}: face {face} requested but {len(faces)} found (0 is the leftmost)")
    chosen = range(len(faces)) if face is None else [face % len(faces)]
    return [align_face(photo, faces[i], framing, index=i) for i in chosen]
