"""dlib and its model files: the 68-point landmark predictor, the HOG and the MMOD CNN face detectors.

dlib is optional (``pip install idinvert[align]``): it is imported when a face is first looked for,
and ``check_alignment_available`` says how to install what is missing.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from ..errors import CheckpointError, IdinvertError

DLIB_PIN = "dlib-bin==20.0.1.post1"
MODELS_PIN = "face_recognition_models==0.3.0"
SHAPE_MODEL = "shape_predictor_68_face_landmarks.dat"
CNN_MODEL = "mmod_human_face_detector.dat"
DEBIAN_MODELS = Path("/usr/share/dlib")  # Debian's libdlib-data (68-point model only)
INSTALL_HINT = f"pip install {DLIB_PIN} {MODELS_PIN} (or apt install libdlib-data for the landmark model)"
LANDMARK_TERMS = ("68-point landmarks from dlib's shape predictor, trained on iBUG 300-W: "
                  "non-commercial research use only")


def dlib_module():
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
    dlib_module()
    if dlib_model_file(SHAPE_MODEL) is None:
        raise CheckpointError(f"the 68-point landmark model ({SHAPE_MODEL}) is not installed: {INSTALL_HINT}")


@functools.lru_cache(maxsize=None)
def shape_predictor():
    check_alignment_available()
    return dlib_module().shape_predictor(str(dlib_model_file(SHAPE_MODEL)))


@functools.lru_cache(maxsize=None)
def hog_detector():
    return dlib_module().get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def cnn_detector():
    path = dlib_model_file(CNN_MODEL)  # not in Debian's package: then there is no fallback
    return None if path is None else dlib_module().cnn_face_detection_model_v1(str(path))
