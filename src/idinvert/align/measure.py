"""Measuring a framing template on photos that are already aligned crops (``assets/framing_utkface.json``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from ..errors import ImageError
from .detection import NOSE_TIP, detect_faces, key_points
from .framing import Framing
from .geometry import as_rgb_array


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
        rgb = as_rgb_array(photo)
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
