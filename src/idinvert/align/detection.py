"""Finding faces and their 68 landmarks: the HOG detector first; the MMOD CNN confirms weak HOG boxes
and takes over when HOG finds nothing (``detect_faces``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import ImageError
from .framing import Framing
from .geometry import as_rgb_array, photo_region
from .models import cnn_detector, dlib_module, hog_detector, shape_predictor

EYE_LEFT, EYE_RIGHT = slice(36, 42), slice(42, 48)  # the eyes on the image's left and right
MOUTH_LEFT, MOUTH_RIGHT = 48, 54  # mouth corners
NOSE_TIP = 30
JAW, BROWS = slice(0, 17), slice(17, 27)

MIN_PHOTO_SIDE = 16  # refuse smaller photos
DETECT_MIN_SIDE = 320  # detection upscales photos whose longer side is shorter
DETECT_MAX_SIDE = 1024  # ... and downscales longer ones (HOG time grows with the area)
CNN_MAX_SIDE = 512  # the CNN fallback is slow on a CPU (~2 s at 512 px)
DETECT_PAD = 0.125  # edge-replicated border (fraction of the side) so tight crops are found
DETECTORS = ("auto", "hog", "cnn")
# HOG box centre − CNN box centre (in CNN box sides) and side ratio: medians over 117 CelebA train
# photos where both detectors found the face (landmarks from the raw CNN box drift ~1–3 %).
CNN_TO_HOG = (0.076, 0.076, 1.09)
WEAK_HOG_SCORE = 0.5  # "auto" asks the CNN to confirm HOG boxes below this SVM margin


def key_points(landmarks: np.ndarray) -> np.ndarray:
    """``[..., 68, 2]`` landmarks → ``[..., 3, 2]`` eye_left, eye_right, mouth centre."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.stack([lm[..., EYE_LEFT, :].mean(-2), lm[..., EYE_RIGHT, :].mean(-2),
                     (lm[..., MOUTH_LEFT, :] + lm[..., MOUTH_RIGHT, :]) / 2], axis=-2)


def fit_points(landmarks: np.ndarray, framing: Framing) -> np.ndarray:
    """The landmarks' counterparts of ``framing.points()``: key points, plus the nose tip when used."""
    points = key_points(landmarks)
    if framing.nose is not None:
        points = np.concatenate([points, np.asarray(landmarks, dtype=np.float64)[..., NOSE_TIP:NOSE_TIP + 1, :]], -2)
    return points


@dataclass(frozen=True)
class DetectedFace:
    """One face found in a photo."""

    landmarks: np.ndarray  # [68, 2] (x, y) in photo pixels (iBUG 300-W order)
    box: tuple[float, float, float, float]  # detector box (left, top, right, bottom) in photo pixels
    detector: str  # "hog" or "cnn"
    score: float  # detector confidence (HOG SVM margin or MMOD score)

    def key_points(self) -> np.ndarray:
        """``[3, 2]`` eye_left, eye_right, mouth centre (the FFHQ recipe's points)."""
        return key_points(self.landmarks)

    @property
    def size(self) -> float:
        """A face scale in photo pixels: the larger of eye distance and eye-to-mouth distance."""
        el, er, m = self.key_points()
        return float(max(np.hypot(*(er - el)), np.hypot(*(m - (el + er) / 2))))


def _resize_array(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if (width, height) == (rgb.shape[1], rgb.shape[0]):
        return rgb
    shrink = width < rgb.shape[1]
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.LANCZOS if shrink
                                                  else Image.Resampling.BICUBIC))


@dataclass(frozen=True)
class _View:
    """A rescaled, padded copy of the photo that a detector runs on."""

    pixels: np.ndarray  # [h, w, 3] uint8, C-contiguous
    scale: tuple[float, float]  # view pixels per photo pixel in x and y
    pad: int

    @staticmethod
    def of(rgb: np.ndarray, longest: int, pad_fraction: float) -> "_View":
        h, w = rgb.shape[:2]
        r = longest / max(h, w)
        nw, nh = (max(1, round(w * r)), max(1, round(h * r))) if r != 1.0 else (w, h)
        pixels = _resize_array(rgb, nw, nh)
        pad = round(pad_fraction * max(nw, nh))
        if pad:
            pixels = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        return _View(np.ascontiguousarray(pixels), (nw / w, nh / h), pad)

    def to_photo(self, xy: np.ndarray) -> np.ndarray:
        """Continuous view coordinates → continuous photo coordinates."""
        return (np.asarray(xy, dtype=np.float64) - self.pad) / np.array(self.scale)

    def from_photo(self, xy: np.ndarray) -> np.ndarray:
        return np.asarray(xy, dtype=np.float64) * np.array(self.scale) + self.pad

    def box_to_photo(self, rect) -> np.ndarray:
        """A dlib rectangle (inclusive pixel indices) → (left, top, right, bottom) photo coordinates."""
        return np.concatenate([self.to_photo((rect.left(), rect.top())),
                               self.to_photo((rect.right() + 1, rect.bottom() + 1))])


def _detection_side(longest: int) -> int | None:
    if longest > DETECT_MAX_SIDE:
        return DETECT_MAX_SIDE
    return DETECT_MIN_SIDE if longest < DETECT_MIN_SIDE else None


def _boxes_hog(view: _View, upsample: Sequence[int]) -> list[tuple[np.ndarray, float, str]]:
    found = []
    for up in upsample:
        rects, scores, _ = hog_detector().run(view.pixels, up, 0.0)
        found += [(view.box_to_photo(r), s, "hog") for r, s in zip(rects, scores)]
    return _suppress(found)


def _boxes_cnn(view: _View) -> list[tuple[np.ndarray, float, str]]:
    cnn = cnn_detector()
    return [] if cnn is None else _suppress([(_hog_like(view.box_to_photo(d.rect)), d.confidence, "cnn")
                                             for d in cnn(view.pixels, 0)])


def _hog_like(box: np.ndarray) -> np.ndarray:
    """A CNN box moved and grown to where HOG puts its box, which the landmark model was trained on."""
    dx, dy, grow = CNN_TO_HOG
    side = box[2:] - box[:2]
    centre = (box[:2] + box[2:]) / 2 + np.array([dx, dy]) * side
    return np.concatenate([centre - side * grow / 2, centre + side * grow / 2])


def _confirm(rgb: np.ndarray, box: np.ndarray, score: float) -> tuple[np.ndarray, float, str] | None:
    """Check a weak HOG box with the CNN on a window three boxes wide around it.

    Kept if the CNN sees a face there too; replaced by the CNN's box when that face encloses the
    HOG box's centre (HOG sometimes fires on a part of a large face); dropped otherwise.
    """
    if cnn_detector() is None:
        return box, score, "hog"
    h, w = rgb.shape[:2]
    side = box[2:] - box[:2]
    x0, y0, x1, y1 = photo_region(w, h, np.stack([box[:2] - side, box[2:] + side]), 0)
    view = _View.of(rgb[y0:y1, x0:x1], 300, DETECT_PAD)
    centre = (box[:2] + box[2:]) / 2
    for found, conf, _ in _boxes_cnn(view):
        found = found + np.array([x0, y0, x0, y0])
        if _iou(found, box) >= 0.3:
            return box, score, "hog"
        if np.all(found[:2] <= centre) and np.all(centre <= found[2:]):
            return found, conf, "cnn"
    return None


def _suppress(boxes: list[tuple[np.ndarray, float, str]], iou: float = 0.4) -> list[tuple[np.ndarray, float, str]]:
    """Non-maximum suppression: of overlapping boxes keep the most confident."""
    kept: list[tuple[np.ndarray, float, str]] = []
    for item in sorted(boxes, key=lambda b: -b[1]):
        if all(_iou(item[0], k[0]) < iou for k in kept):
            kept.append(item)
    return kept


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def detect_faces(photo: Image.Image | np.ndarray, *, detector: str = "auto",
                 upsample: Sequence[int] = (0, 1)) -> list[DetectedFace]:
    """Faces with 68 landmarks, ordered left to right by the midpoint of the eyes.

    ``detector``: "auto" (HOG; weak HOG boxes, score < 0.5, confirmed by the CNN; the CNN alone
    when HOG finds nothing), "hog" or "cnn". ``upsample``: HOG pyramid upsamplings to run (1
    finds faces down to ~40 px in the detection copy, whose longer side is 320–1024 px).
    An empty list means no face.
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    rgb = as_rgb_array(photo)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_PHOTO_SIDE:
        raise ImageError(f"{w}×{h} px is too small to find a face (at least {MIN_PHOTO_SIDE} px a side)")
    predictor = shape_predictor()
    side = _detection_side(max(h, w)) or max(h, w)
    view = _View.of(rgb, side, DETECT_PAD)
    found = []
    if detector in ("auto", "hog"):
        for box, score, kind in _boxes_hog(view, upsample):
            weak = detector == "auto" and score < WEAK_HOG_SCORE
            confirmed = _confirm(rgb, box, score) if weak else (box, score, kind)
            found += [confirmed] if confirmed is not None else []
    if not found and detector in ("auto", "cnn"):
        found = _boxes_cnn(_View.of(rgb, min(side, CNN_MAX_SIDE), DETECT_PAD))
    # Landmarks on the full-resolution photo, or on the upscaled copy when that is larger.
    fine = view if side > max(h, w) else _View(rgb, (1.0, 1.0), 0)
    faces = []
    for box, score, kind in _suppress(found):
        left, top = np.round(fine.from_photo(box[:2]))
        right, bottom = np.round(fine.from_photo(box[2:])) - 1  # dlib rectangles include their corners
        shape = predictor(fine.pixels, dlib_module().rectangle(int(left), int(top), int(right), int(bottom)))
        points = fine.to_photo(np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64) + 0.5)
        face = DetectedFace(points, tuple(float(v) for v in box), kind, float(score))
        centre = face.key_points()[:2].mean(0)
        if 0 <= centre[0] <= w and 0 <= centre[1] <= h:  # not a face found in the padding
            faces.append(face)
    return sorted(faces, key=lambda f: tuple(f.key_points()[:2].mean(0)))
