"""Face detection, alignment to a framing template, and paste-back into the photo.

The models were trained on aligned face crops; ordinary photos (any size, several people, faces
off-centre) must be brought to the same framing first. This package

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

**Modules**: ``framing`` (templates), ``models`` (dlib and its model files), ``detection``, ``transform``
(the similarity, the warp and ``align_faces``), ``paste`` (paste-back), ``measure`` (measuring a
template), ``geometry`` (pixel coordinates and resampling); every public name is importable from
``idinvert.align``.

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

from .detection import (BROWS, CNN_MAX_SIDE, CNN_TO_HOG, DETECTORS, DETECT_MAX_SIDE, DETECT_MIN_SIDE, DETECT_PAD,
                        EYE_LEFT, EYE_RIGHT, JAW, MIN_PHOTO_SIDE, MOUTH_LEFT, MOUTH_RIGHT, NOSE_TIP, WEAK_HOG_SCORE,
                        DetectedFace, detect_faces, fit_points, key_points)
from .framing import RULES, Framing, Point, ffhq_framing, framing_from_config, utkface_framing
from .measure import FramingMeasurement, measure_framing
from .models import (CNN_MODEL, DEBIAN_MODELS, DLIB_PIN, INSTALL_HINT, LANDMARK_TERMS, MODELS_PIN, SHAPE_MODEL,
                     check_alignment_available, dlib_model_file)
from .paste import PasteConfig, face_mask, paste_back
from .transform import (AlignedFace, FaceAlignment, align_face, align_faces, alignment_matrix, framing_positions,
                        warp_photo)

__all__ = [
    "AlignedFace", "BROWS", "CNN_MAX_SIDE", "CNN_MODEL", "CNN_TO_HOG", "DEBIAN_MODELS", "DETECTORS",
    "DETECT_MAX_SIDE", "DETECT_MIN_SIDE", "DETECT_PAD", "DLIB_PIN", "DetectedFace", "EYE_LEFT", "EYE_RIGHT",
    "FaceAlignment", "Framing", "FramingMeasurement", "INSTALL_HINT", "JAW", "LANDMARK_TERMS", "MIN_PHOTO_SIDE",
    "MODELS_PIN", "MOUTH_LEFT", "MOUTH_RIGHT", "NOSE_TIP", "PasteConfig", "Point", "RULES", "SHAPE_MODEL",
    "WEAK_HOG_SCORE", "align_face", "align_faces", "alignment_matrix", "check_alignment_available", "detect_faces",
    "dlib_model_file", "face_mask", "ffhq_framing", "fit_points", "framing_from_config", "framing_positions",
    "key_points", "measure_framing", "paste_back", "utkface_framing", "warp_photo",
]
