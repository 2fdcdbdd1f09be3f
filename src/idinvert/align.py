"""Face detection, alignment to a framing template, and paste-back into the photo.

The models were trained on aligned face crops; ordinary photos (any size, several people, faces
off-centre) must be brought to the same framing first. This module

1. finds faces and 68 landmarks with dlib: the HOG detector first; the MMOD CNN detector confirms
   weak HOG boxes and takes over when HOG finds nothing (``detect_faces``);
2. maps each face with one similarity transform (rotation, uniform scale, translation) onto a
   *framing template* and resamples it with antialiasing and reflect padding (``align_faces``);
3. after inversion or editing, warps the generated face back into the photo with the inverse
   transform under a soft face mask (``paste_back``).

**Landmark model terms.** The 68-point landmarks come from dlib's shape predictor
``shape_predictor_68_face_landmarks.dat``, trained on the iBUG 300-W data set, whose terms allow
non-commercial research use only. Results made with it inherit those terms.

**Framing templates** (``Framing``) give the eye centres (means of landmarks 36–41 and 42–47,
0-based), the mouth centre (midpoint of the corners 48 and 54) and optionally the nose tip (30) in
the unit square, plus the output size; a model pack stores its template in ``config.json`` under
``"framing"``. The similarity is the least-squares fit of those points. (With the nose tip, the
fit moves the UTKFace training crops least: a median 0.8 % of the side, against 2.0 % for eyes
and mouth alone and 1.2 % for the five points eyes, nose, mouth corners; measured on 800 train
crops.)

- ``ffhq_framing(size)``: the FFHQ recipe (spec §7.5) used by the official Colab for the official
  256 models. Its transform is the recipe's oriented quad (``rule="ffhq"``); its points are the
  mean positions that the recipe produces (measured on the UTKFace train faces).
- ``utkface_framing(size)``: the mean positions (nose tip included) on the UTKFace train crops
  (the default pack's training data), from ``assets/framing_utkface.json``; reproduce it with
  ``python scripts/measure_utkface_framing.py ../shared/data/utkface`` (``measure_framing``).

**Coordinates** are continuous pixel coordinates with the origin at the image's top-left
corner: pixel (row i, column j) covers [j, j+1) × [i, i+1), so its centre is (j + 0.5, i + 0.5).

**Several faces** are returned ordered left to right by the midpoint of the eyes; ``face=k``
picks one (0 is the leftmost). **Small photos:** detection runs on a copy upscaled to 320 px
(longer side), so a 40 px face is found; its crop is then upsampled and blurry
(``FaceAlignment.scale`` < 1 says by how much). Photos under 16 px are refused.

Example (every face of a photo inverted and pasted back)::

    photo = idinvert.images.open_image("group.jpg")
    faces = align_faces(photo, framing_from_config(pack.config) or utkface_framing(64), name="group.jpg")
    result = idinvert.invert(torch.stack([f.image for f in faces]), pack)
    for face, generated in zip(faces, result.reconstructions):
        photo = paste_back(photo, generated, face.alignment)
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

from .errors import CheckpointError, ConfigError, IdinvertError, ImageError
from .images import to_rgb

DLIB_PIN = "dlib-bin==20.0.1.post1"
MODELS_PIN = "face_recognition_models==0.3.0"
SHAPE_MODEL = "shape_predictor_68_face_landmarks.dat"
CNN_MODEL = "mmod_human_face_detector.dat"
DEBIAN_MODELS = Path("/usr/share/dlib")  # Debian's libdlib-data (68-point model only)
INSTALL_HINT = f"pip install {DLIB_PIN} {MODELS_PIN} (or apt install libdlib-data for the landmark model)"
LANDMARK_TERMS = ("68-point landmarks from dlib's shape predictor, trained on iBUG 300-W: "
                  "non-commercial research use only")

EYE_LEFT, EYE_RIGHT = slice(36, 42), slice(42, 48)  # the eyes on the image's left and right
MOUTH_LEFT, MOUTH_RIGHT = 48, 54  # mouth corners
NOSE_TIP = 30
JAW, BROWS = slice(0, 17), slice(17, 27)

MIN_PHOTO_SIDE = 16  # refuse smaller photos
DETECT_MIN_SIDE = 320  # detection upscales photos whose longer side is shorter
DETECT_MAX_SIDE = 1024  # ... and downscales longer ones (HOG time grows with the area)
CNN_MAX_SIDE = 512  # the CNN fallback is slow on a CPU (~2 s at 512 px)
DETECT_PAD = 0.125  # edge-replicated border (fraction of the side) so tight crops are found
RULES = ("similarity", "ffhq")
DETECTORS = ("auto", "hog", "cnn")
# HOG box centre − CNN box centre (in CNN box sides) and side ratio: medians over 117 CelebA train
# photos where both detectors found the face (landmarks from the raw CNN box drift ~1–3 %).
CNN_TO_HOG = (0.076, 0.076, 1.09)
WEAK_HOG_SCORE = 0.5  # "auto" asks the CNN to confirm HOG boxes below this SVM margin

Point = tuple[float, float]


# ----------------------------------------------------------------------------- framing templates

@dataclass(frozen=True)
class Framing:
    """Where a face lands in the aligned square crop (unit coordinates, x right, y down)."""

    eye_left: Point  # centre of landmarks 36–41, the eye on the image's left
    eye_right: Point  # centre of landmarks 42–47
    mouth: Point  # midpoint of the mouth corners 48 and 54
    nose: Point | None = None  # nose tip, landmark 30 (optional; joins the fit when given)
    size: int = 256  # side of the aligned crop in pixels
    rule: str = "similarity"  # "similarity": least squares on the points; "ffhq": the FFHQ quad recipe
    name: str = ""  # where the template comes from

    def __post_init__(self) -> None:
        for key in ("eye_left", "eye_right", "mouth", "nose"):
            value = getattr(self, key)
            if value is None and key == "nose":
                continue
            try:
                point = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                point = ()
            if len(point) != 2 or not all(math.isfinite(v) and -1.0 <= v <= 2.0 for v in point):
                raise ConfigError(f"framing {key} must be two numbers in unit coordinates, got {value!r}")
            object.__setattr__(self, key, point)
        if not isinstance(self.size, int) or not 8 <= self.size <= 4096:
            raise ConfigError(f"framing size must be an integer from 8 to 4096, got {self.size!r}")
        if self.rule not in RULES:
            raise ConfigError(f"framing rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if not self.eye_left[0] < self.eye_right[0]:
            raise ConfigError("framing eye_left must lie left of eye_right")

    def with_size(self, size: int) -> "Framing":
        return dataclasses.replace(self, size=size)

    def points(self) -> np.ndarray:
        """``[P, 2]`` eye_left, eye_right, mouth (and nose when given) in crop pixels."""
        points = [self.eye_left, self.eye_right, self.mouth] + ([self.nose] if self.nose is not None else [])
        return np.array(points, dtype=np.float64) * self.size

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rule": self.rule, "size": self.size, "eye_left": list(self.eye_left),
                "eye_right": list(self.eye_right), "mouth": list(self.mouth),
                "nose": None if self.nose is None else list(self.nose)}

    @classmethod
    def from_dict(cls, data: Any, *, what: str = "framing") -> "Framing":
        if not isinstance(data, dict):
            raise ConfigError(f"{what} must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(data) - names), sorted({"eye_left", "eye_right", "mouth"} - set(data))
        if unknown or missing:
            raise ConfigError(f"{what}: unknown fields {unknown}, missing fields {missing}")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{what}: {exc}") from None


# Mean positions that the FFHQ recipe produces on 21,552 UTKFace train faces
# (assets/framing_utkface.json "ffhq_recipe_positions"; the recipe itself, not these points, sets the transform).
_FFHQ_POINTS = {"eye_left": (0.3766, 0.4747), "eye_right": (0.6233, 0.4750), "mouth": (0.5003, 0.7263)}


def ffhq_framing(size: int = 256) -> Framing:
    """The FFHQ alignment recipe (official models: 256)."""
    return Framing(**_FFHQ_POINTS, size=size, rule="ffhq", name="ffhq")


def utkface_framing(size: int = 64) -> Framing:
    """The mean framing of the UTKFace train crops (the default pack's training data, 64 px):
    eyes (0.300, 0.301), (0.687, 0.301), mouth (0.494, 0.694), nose tip (0.492, 0.513)."""
    data = json.loads(resources.files("idinvert").joinpath("assets", "framing_utkface.json").read_text("utf-8"))
    return Framing.from_dict(data["framing"], what="assets/framing_utkface.json").with_size(size)


def framing_from_config(config: dict[str, Any], *, what: str = "config.json") -> Framing | None:
    """The template a model pack stores under ``"framing"`` (``None`` when it has none)."""
    entry = config.get("framing")
    return None if entry is None else Framing.from_dict(entry, what=f"{what} [framing]")


# ----------------------------------------------------------------------------- dlib and its models

def _dlib():
    try:
        import dlib
    except ImportError:
        raise IdinvertError(f"face alignment needs dlib and its landmark model: {INSTALL_HINT}") from None
    return dlib


def dlib_model_file(name: str) -> Path | None:
    """A dlib model file from ``face_recognition_models`` or Debian's ``libdlib-data``, if installed."""
    spec = importlib.util.find_spec("face_recognition_models")  # located, not imported
    folders = [Path(p) / "models" for p in (spec.submodule_search_locations or [])] if spec else []
    for folder in folders + [DEBIAN_MODELS]:
        if (folder / name).is_file():
            return folder / name
    return None


def check_alignment_available() -> None:
    """Raise an ``IdinvertError`` that says how to install what face alignment needs."""
    _dlib()
    if dlib_model_file(SHAPE_MODEL) is None:
        raise CheckpointError(f"the 68-point landmark model ({SHAPE_MODEL}) is not installed: {INSTALL_HINT}")


@functools.lru_cache(maxsize=None)
def _shape_predictor():
    check_alignment_available()
    return _dlib().shape_predictor(str(dlib_model_file(SHAPE_MODEL)))


@functools.lru_cache(maxsize=None)
def _hog_detector():
    return _dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def _cnn_detector():
    path = dlib_model_file(CNN_MODEL)  # not in Debian's package: then there is no fallback
    return None if path is None else _dlib().cnn_face_detection_model_v1(str(path))


# ----------------------------------------------------------------------------- detection

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


def _as_rgb_array(photo: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(photo, Image.Image):
        array = np.asarray(to_rgb(photo))
    elif isinstance(photo, np.ndarray) and photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3:
        array = photo
    else:
        raise TypeError("photo must be a PIL image or a uint8 array [H, W, 3]")
    return np.ascontiguousarray(array)


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
        rects, scores, _ = _hog_detector().run(view.pixels, up, 0.0)
        found += [(view.box_to_photo(r), s, "hog") for r, s in zip(rects, scores)]
    return _suppress(found)


def _boxes_cnn(view: _View) -> list[tuple[np.ndarray, float, str]]:
    cnn = _cnn_detector()
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
    if _cnn_detector() is None:
        return box, score, "hog"
    h, w = rgb.shape[:2]
    side = box[2:] - box[:2]
    x0, y0, x1, y1 = _photo_region(w, h, np.stack([box[:2] - side, box[2:] + side]), 0)
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
    rgb = _as_rgb_array(photo)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_PHOTO_SIDE:
        raise ImageError(f"{w}×{h} px is too small to find a face (at least {MIN_PHOTO_SIDE} px a side)")
    predictor = _shape_predictor()
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
        shape = predictor(fine.pixels, _dlib().rectangle(int(left), int(top), int(right), int(bottom)))
        points = fine.to_photo(np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64) + 0.5)
        face = DetectedFace(points, tuple(float(v) for v in box), kind, float(score))
        centre = face.key_points()[:2].mean(0)
        if 0 <= centre[0] <= w and 0 <= centre[1] <= h:  # not a face found in the padding
            faces.append(face)
    return sorted(faces, key=lambda f: tuple(f.key_points()[:2].mean(0)))


# ----------------------------------------------------------------------------- alignment transform

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


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def framing_positions(landmarks: np.ndarray, framing: Framing) -> np.ndarray:
    """``[3, 2]`` where eye_left, eye_right and mouth land in the unit square under ``framing``."""
    return _apply(alignment_matrix(landmarks, framing), key_points(landmarks)) / framing.size


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
        return _apply(self.matrix, self.face.landmarks)

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


# ----------------------------------------------------------------------------- resampling

def _translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _scale(sx: float, sy: float) -> np.ndarray:
    return np.diag([sx, sy, 1.0])


def _sample(src: torch.Tensor, dst_to_src: np.ndarray, width: int, height: int, *,
            padding: str) -> torch.Tensor:
    """``[C, height, width]``: ``src [C, h, w]`` read at ``dst_to_src`` of every output pixel centre."""
    _, h, w = src.shape
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                            torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    m = torch.from_numpy(dst_to_src)
    sx, sy = m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    grid = torch.stack([sx * (2.0 / w) - 1.0, sy * (2.0 / h) - 1.0], dim=-1).to(src.dtype)
    return F.grid_sample(src[None], grid[None], mode="bicubic", padding_mode=padding, align_corners=False)[0]


def _shrink(src: torch.Tensor, factor: float) -> tuple[torch.Tensor, np.ndarray]:
    """Antialiased downscale by ``factor`` and the matrix from old to new pixel coordinates."""
    _, h, w = src.shape
    nh, nw = max(1, round(h / factor)), max(1, round(w / factor))
    out = F.interpolate(src[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    return out, _scale(nw / w, nh / h)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``[C, H, W]`` blurred with a Gaussian of σ = ``sigma`` pixels (reflect at the borders)."""
    c = x.shape[0]
    radius = max(1, min(int(3 * sigma + 0.5), min(x.shape[-2:]) - 1))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def _photo_region(w: int, h: int, corners: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1) around ``corners`` (photo pixels) clipped to the photo."""
    x0 = min(max(0, math.floor(corners[:, 0].min() - margin)), w - 1)
    y0 = min(max(0, math.floor(corners[:, 1].min() - margin)), h - 1)
    x1 = max(min(w, math.ceil(corners[:, 0].max() + margin)), x0 + 1)
    y1 = max(min(h, math.ceil(corners[:, 1].max() + margin)), y0 + 1)
    return x0, y0, x1, y1


def warp_photo(photo: Image.Image | np.ndarray, matrix: np.ndarray, size: int, *,
               supersample: int = 2) -> torch.Tensor:
    """``[3, size, size]`` in [-1, 1]: the photo seen through ``matrix`` (photo → crop pixels).

    Antialiased: the part of the photo under the crop is first shrunk (box filter, then
    antialiased bilinear) to ``supersample`` photo pixels per crop pixel, sampled bicubically at
    ``supersample`` × ``size`` and reduced to ``size``. Outside the photo the picture is
    reflected, then blurred and faded to the median colour with the distance from the photo's
    edge (the idea of the FFHQ recipe's padding).
    """
    rgb = _as_rgb_array(photo)
    h, w = rgb.shape[:2]
    inverse = np.linalg.inv(matrix)
    scale = math.sqrt(abs(np.linalg.det(inverse[:2, :2])))  # photo pixels per crop pixel
    corners = _apply(inverse, np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64))
    x0, y0, x1, y1 = _photo_region(w, h, corners, 4 * max(scale, 1.0) + 2)
    pixels = rgb[y0:y1, x0:x1]
    to_region = _translate(-x0, -y0) @ inverse @ _scale(1 / supersample, 1 / supersample)
    factor = scale / supersample  # region pixels per sample
    if factor >= 2:  # integer box reduction in uint8 first: fast, and bounds the memory for big photos
        k = int(factor)
        pixels, factor = np.asarray(Image.fromarray(pixels).reduce(k)), factor / k
        to_region = _scale(1 / k, 1 / k) @ to_region
    region = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 127.5 - 1.0
    if factor > 1:
        region, shrink = _shrink(region, factor)
        to_region = shrink @ to_region
    out = _sample(region, to_region, size * supersample, size * supersample, padding="reflection")
    if supersample > 1:
        out = F.interpolate(out[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0]
    return _soften_padding(out.clamp(-1.0, 1.0), inverse, w, h, scale, pixels)


def _soften_padding(out: torch.Tensor, inverse: np.ndarray, w: int, h: int, scale: float,
                    visible: np.ndarray) -> torch.Tensor:
    """Blur the reflected picture outside the photo and fade it to the median of ``visible``."""
    size = out.shape[-1]
    centres = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1).reshape(-1, 2)
    p = _apply(inverse, centres)
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


# ----------------------------------------------------------------------------- the public pipeline

def align_face(photo: Image.Image | np.ndarray, face: DetectedFace, framing: Framing, *,
               index: int = 0) -> AlignedFace:
    """One detected face → its aligned crop at ``framing.size``."""
    rgb = _as_rgb_array(photo)
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


# ----------------------------------------------------------------------------- paste-back

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
    box = _photo_region(w, h, hull, grow + 4 * sigma + 2)
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
    uv = _apply(alignment.matrix, np.stack([xs.ravel(), ys.ravel()], -1)).reshape(y1 - y0, x1 - x0, 2)
    edge = np.minimum(np.minimum(uv[..., 0], size - uv[..., 0]), np.minimum(uv[..., 1], size - uv[..., 1]))
    ramp = max(1.0, 2 * sigma / alignment.scale)  # crop pixels
    return box, soft * np.clip(edge / ramp, 0.0, 1.0).astype(np.float32)


def paste_back(photo: Image.Image | np.ndarray, face: torch.Tensor, alignment: FaceAlignment,
               config: PasteConfig = PasteConfig()) -> Image.Image:
    """The photo at its original size with ``face [3, R, R]`` (in [-1, 1]) blended in.

    ``face`` is warped with the inverse alignment (any R: it is rescaled to the framing) and
    blended under ``face_mask``; pixels where the mask is 0 are returned bit for bit.
    """
    rgb = _as_rgb_array(photo)
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
    to_face = _scale(r / alignment.framing.size, r / alignment.framing.size) @ alignment.matrix @ _translate(x0, y0)
    density = r / alignment.framing.size / alignment.scale  # face pixels per photo pixel
    if density > 1:
        src, shrink = _shrink(src, density)
        to_face = shrink @ to_face
    warped = (_sample(src, to_face, x1 - x0, y1 - y0, padding="border").clamp(-1, 1) + 1.0) * 127.5
    warped = warped.permute(1, 2, 0).numpy()
    old = rgb[y0:y1, x0:x1].astype(np.float32)
    blended = np.clip(np.floor(old + (warped - old) * mask[..., None] + 0.5), 0, 255).astype(np.uint8)
    inside = mask > 0
    out[y0:y1, x0:x1][inside] = blended[inside]
    return Image.fromarray(out)


# ----------------------------------------------------------------------------- measuring a template

@dataclass(frozen=True)
class FramingMeasurement:
    """A template measured on aligned training photos, with what it was measured on."""

    framing: Framing
    landmarks: np.ndarray  # [N, 68, 2] landmarks of every measured face, unit coordinates
    missed: int  # photos in which no face was found
    rejected: int  # faces dropped as detection failures (a point > 0.1 from the median)

    @property
    def count(self) -> int:
        return len(self.landmarks)

    def spread(self) -> dict[str, list[float]]:
        """Standard deviation of each template point over the photos (unit coordinates)."""
        keys = key_points(self.landmarks)
        return {k: np.round(keys[:, i].std(0), 4).tolist() for i, k in enumerate(("eye_left", "eye_right", "mouth"))}


def measure_framing(photos: Iterable[Image.Image | np.ndarray], *, size: int, name: str,
                    upsample: Sequence[int] = (0,), outlier: float = 0.1) -> FramingMeasurement:
    """The mean eye, mouth and nose-tip positions over photos that are already aligned crops.

    HOG detector only (fast; no CNN), the largest face of each photo, positions divided by
    the photo's width and height. Faces with a point farther than ``outlier`` (unit
    coordinates) from the median are detection failures and left out of the mean. This made
    ``assets/framing_utkface.json`` (see ``scripts/measure_utkface_framing.py``).
    """
    measured, missed = [], 0
    for photo in photos:
        rgb = _as_rgb_array(photo)
        faces = detect_faces(rgb, detector="hog", upsample=upsample)
        if not faces:
            missed += 1
            continue
        largest = max(faces, key=lambda f: f.size)
        measured.append(largest.landmarks / np.array([rgb.shape[1], rgb.shape[0]], dtype=np.float64))
    if not measured:
        raise ImageError("no face found in any of the photos; nothing to measure")
    landmarks = np.stack(measured)
    keys = key_points(landmarks)
    good = np.abs(keys - np.median(keys, axis=0)).max(axis=(1, 2)) <= outlier
    mean, nose = keys[good].mean(0), landmarks[good, NOSE_TIP].mean(0)
    framing = Framing(eye_left=tuple(np.round(mean[0], 4)), eye_right=tuple(np.round(mean[1], 4)),
                      mouth=tuple(np.round(mean[2], 4)), nose=tuple(np.round(nose, 4)), size=size,
                      rule="similarity", name=name)
    return FramingMeasurement(framing, landmarks[good], missed, int((~good).sum()))
