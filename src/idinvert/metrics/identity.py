"""Identity similarity of two face images with dlib's 128-d face descriptor (an optional extra).

For each image (``[-1, 1]`` → 8-bit RGB as when saved):

1. Face box: dlib's HOG frontal-face detector, the image upsampled once; the largest box when
   there are several. When it finds none (tight aligned crops and small images often defeat
   it), the whole image is taken as the face box.
2. Five landmarks from ``shape_predictor_5_face_landmarks.dat`` (dlib's own 5-point model, not
   the iBUG 300-W 68-point one with its non-commercial terms).
3. The descriptor of ``dlib_face_recognition_resnet_model_v1.dat`` on dlib's aligned 150×150
   chip (padding 0.25, no jitter).

The similarity is the cosine of the two descriptors: 1 for the same descriptor, lower for less
similar faces. (dlib's own rule for its descriptors is Euclidean distance < 0.6 for one person;
``descriptor_distance`` gives that distance.) Needs ``pip install dlib-bin==20.0.1.post1
face_recognition_models==0.3.0``; without them the functions raise a one-line ``IdinvertError``.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import IdinvertError
from ..images import tensor_to_uint8
from .pixel import check_pair
from .weights import DLIB_FACE_RECOGNITION, DLIB_SHAPE_PREDICTOR, dlib_model_file

DLIB_INSTALL = "pip install dlib-bin==20.0.1.post1 face_recognition_models==0.3.0"
DETECTOR_UPSAMPLE = 1  # times the HOG detector upsamples the image
DESCRIPTOR_DIM = 128


def require_dlib():
    """The ``dlib`` module, or a one-line IdinvertError saying how to install it and its models."""
    missing = [name for name in ("dlib", "face_recognition_models") if importlib.util.find_spec(name) is None]
    if missing:
        raise IdinvertError(f"the identity metric needs {' and '.join(missing)}; install with: {DLIB_INSTALL}")
    import dlib

    return dlib


class FaceIdentity:
    """dlib's face detector, 5-point landmarks and ResNet descriptor, loaded once (CPU)."""

    def __init__(self) -> None:
        dlib = require_dlib()
        self._rectangle = dlib.rectangle
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(dlib_model_file(DLIB_SHAPE_PREDICTOR)))
        self.encoder = dlib.face_recognition_model_v1(str(dlib_model_file(DLIB_FACE_RECOGNITION)))

    def face_box(self, image: np.ndarray):
        """The largest detected face of an ``[H, W, 3]`` uint8 image, else the whole image."""
        boxes = list(self.detector(image, DETECTOR_UPSAMPLE))
        if not boxes:
            return self._rectangle(0, 0, image.shape[1] - 1, image.shape[0] - 1)
        return max(boxes, key=lambda box: box.area())

    def descriptor(self, image: np.ndarray) -> np.ndarray:
        """128-d descriptor of an ``[H, W, 3]`` uint8 RGB image."""
        image = np.ascontiguousarray(image)
        shape = self.landmarks(image, self.face_box(image))
        return np.asarray(self.encoder.compute_face_descriptor(image, shape), dtype=np.float32)

    def descriptors(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` in [-1, 1] → descriptors ``[N, 128]`` on the images' device."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images [N, 3, H, W], got {list(images.shape)}")
        pixels = tensor_to_uint8(images)
        return torch.from_numpy(np.stack([self.descriptor(p) for p in pixels])).to(images.device)


@functools.lru_cache(maxsize=None)
def cached_face_identity() -> FaceIdentity:
    """One shared set of dlib models in this process, loaded on first use."""
    return FaceIdentity()


def face_descriptors(images: torch.Tensor) -> torch.Tensor:
    """dlib face descriptors ``[N, 128]`` of images ``[N, 3, H, W]`` in [-1, 1]."""
    return cached_face_identity().descriptors(images)


@torch.no_grad()
def identity_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the dlib face descriptors of each pair ``[N]`` (1 = same descriptor)."""
    check_pair(a, b, channels=3)
    return F.cosine_similarity(face_descriptors(a), face_descriptors(b), dim=1)


@torch.no_grad()
def descriptor_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of the dlib face descriptors of each pair ``[N]`` (dlib: < 0.6 = one person)."""
    check_pair(a, b, channels=3)
    return (face_descriptors(a) - face_descriptors(b)).norm(dim=1)
