"""Face alignment and paste-back (idinvert.align, ``idinvert align``).

Photos come from the test splits of ../shared/data (UTKFace and CelebA), extracted to a temporary
folder. Tests that detect faces skip, saying how to install them, when dlib or its landmark
model is missing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_data, shared_test_photos, tiny_networks
from idinvert import align as A
from idinvert.align import models as align_models
from idinvert.align.geometry import apply_matrix
from idinvert.cli import main
from idinvert.errors import CheckpointError, ConfigError, IdinvertError, ImageError
from idinvert.images import open_image, tensor_to_pil
from idinvert.pack import save_pack
from idinvert.perceptual import default_perceptual_config

# Re-detected eye centres in 256 px crops, as fractions of the side: (median, max) distance from
# the template. Eyes and mouth alone pin the eyes closely; the UTKFace preset also fits the nose
# tip, which reproduces how the UTKFace crops were framed (module docstring) and, like those crops
# (σ ≈ 0.017 per coordinate), lets the eyes follow the head's turn.
TEMPLATE_TOLERANCE = {"utkface": (0.02, 0.07), "utkface-eyes-mouth": (0.015, 0.03), "ffhq": (0.015, 0.03)}
SELF_TOLERANCE = (1.0, 8.0)  # px at 256: (median, max) from where the transform put the detected eyes


@pytest.fixture(scope="module")
def dlib_ready():
    try:
        A.check_alignment_available()
    except IdinvertError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, list[Path]]:
    folder = tmp_path_factory.mktemp("faces")
    return {"utkface": shared_test_photos(shared_data("utkface", "images.tar"), shared_data("utkface", "labels.csv"), 6,
                                   folder),
            "celeba": shared_test_photos(shared_data("celeba6k", "images.tar"), shared_data("celeba6k", "attributes.csv"),
                                  6, folder)}


@pytest.fixture(scope="module")
def two_faces(photos, tmp_path_factory) -> Path:
    """Two real faces side by side on a grey canvas (UTKFace on the left, CelebA on the right)."""
    canvas = Image.new("RGB", (560, 320), (128, 128, 128))
    canvas.paste(open_image(photos["utkface"][0]), (30, 60))
    canvas.paste(open_image(photos["celeba"][0]), (330, 40))
    path = tmp_path_factory.mktemp("canvas") / "two.png"
    canvas.save(path)
    return path


def _eye_errors(aligned: A.AlignedFace) -> tuple[np.ndarray, np.ndarray]:
    """Distances (crop pixels) of the re-detected eye centres from the template and from where the
    transform put the eyes detected in the photo."""
    faces = A.detect_faces(tensor_to_pil(aligned.image))
    assert faces, "no face found again in the aligned crop"
    found = max(faces, key=lambda f: f.size).key_points()[:2]
    moved = A.key_points(aligned.alignment.crop_landmarks)[:2]
    return (np.hypot(*(found - aligned.alignment.framing.points()[:2]).T), np.hypot(*(found - moved).T))


def _largest(faces: list[A.AlignedFace]) -> A.AlignedFace:
    return max(faces, key=lambda a: a.alignment.face.size)


def _rotation_degrees(matrix: np.ndarray) -> float:
    return math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))


# ----------------------------------------------------------------------------- framing (no dlib)

def test_framing_round_trip_presets_and_errors():
    utk = A.utkface_framing()
    assert utk.size == 64 and utk.rule == "similarity" and utk.name == "utkface"
    assert A.Framing.from_dict(json.loads(json.dumps(utk.to_dict()))) == utk
    ffhq = A.ffhq_framing()
    assert (ffhq.size, ffhq.rule) == (256, "ffhq") and A.ffhq_framing(1024).size == 1024
    assert A.framing_from_config({"framing": utk.with_size(32).to_dict()}) == utk.with_size(32)
    assert A.framing_from_config({}) is None
    assert utk.nose is not None and ffhq.nose is None and len(utk.points()) == 4 and len(ffhq.points()) == 3
    eyes_mouth = A.Framing.from_dict({**utk.to_dict(), "nose": None})
    assert eyes_mouth.nose is None and A.Framing.from_dict(eyes_mouth.to_dict()) == eyes_mouth
    for bad in ({"eye_left": [0.3, 0.3], "eye_right": [0.7, 0.3]},  # no mouth
                {**utk.to_dict(), "rule": "affine"}, {**utk.to_dict(), "size": 4},
                {**utk.to_dict(), "eye_left": [0.8, 0.3]}, {**utk.to_dict(), "mouth": "centre"},
                {**utk.to_dict(), "colour": 1}, {**utk.to_dict(), "nose": [0.5, float("nan")]}, [0.3, 0.3]):
        with pytest.raises(ConfigError):
            A.Framing.from_dict(bad)


def _mean_face(size: float = 200.0) -> np.ndarray:
    record = json.loads((Path(A.__file__).parents[1] / "assets" / "framing_utkface.json").read_text())
    return np.array(record["mean_landmarks"]) * size


def test_similarity_fit_undoes_a_known_transform():
    framing = A.utkface_framing(256)
    angle, scale, shift = math.radians(23.0), 2.7, np.array([412.0, -37.0])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * scale
    landmarks = _mean_face(1.0) @ rot.T * 256 + shift  # a template-shaped face, turned, scaled and moved
    matrix = A.alignment_matrix(landmarks, framing)
    assert np.allclose(apply_matrix(matrix, landmarks), _mean_face(256.0), atol=0.05)
    assert _rotation_degrees(matrix) == pytest.approx(-23.0, abs=0.01)
    assert A.FaceAlignment(A.DetectedFace(landmarks, (0, 0, 1, 1), "hog", 1.0), framing, matrix,
                           (800, 600)).scale == pytest.approx(scale, rel=1e-3)


def test_ffhq_rule_follows_the_recipe():
    """Upright face, eyes (±a, 0), mouth corners (±m, b): the quad is a square of side 2·max(4a, 1.8b)."""
    landmarks = np.zeros((68, 2))
    a, b = 30.0, 70.0
    landmarks[36:42], landmarks[42:48] = (-a, 0.0), (a, 0.0)
    landmarks[48], landmarks[54] = (-20.0, b), (20.0, b)
    landmarks += (500.0, 400.0)
    half = max(4 * a, 1.8 * b)  # recipe: |x| = max(|eye_to_eye|·2, |eye_to_mouth|·1.8)
    centre = np.array([500.0, 400.0 + 0.1 * b])
    points = A.framing_positions(landmarks, A.ffhq_framing(256))
    expected = (np.array([[-a, 0.0], [a, 0.0], [0.0, b]]) + (500.0, 400.0) - centre + half) / (2 * half)
    assert np.allclose(points, expected, atol=1e-9)
    # The preset's points are what the recipe gives for an average face.
    assert np.allclose(A.framing_positions(_mean_face(), A.ffhq_framing()),
                       A.ffhq_framing().points() / 256, atol=0.01)


def test_missing_dlib_or_model_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now fails
    with pytest.raises(IdinvertError, match="pip install dlib-bin==20.0.1.post1"):
        A.check_alignment_available()
    monkeypatch.undo()
    pytest.importorskip("dlib")
    monkeypatch.setattr(align_models, "dlib_model_file", lambda name: None)
    with pytest.raises(CheckpointError, match="face_recognition_models==0.3.0"):
        A.check_alignment_available()


# ----------------------------------------------------------------------------- detection and alignment

@pytest.fixture(scope="module")
def detected(dlib_ready, photos) -> list[tuple[Image.Image, A.DetectedFace]]:
    """Every test photo with its largest face."""
    found = []
    for path in photos["utkface"] + photos["celeba"]:
        photo = open_image(path)
        found.append((photo, max(A.detect_faces(photo), key=lambda f: f.size)))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TEMPLATE_TOLERANCE))
def test_redetected_eyes_land_on_the_template(detected, name):
    framing = {"utkface": A.utkface_framing(256), "ffhq": A.ffhq_framing(256),
               "utkface-eyes-mouth": dataclasses.replace(A.utkface_framing(256), nose=None)}[name]
    template, moved = [], []
    for photo, face in detected:
        aligned = A.align_face(photo, face, framing)
        assert aligned.image.shape == (3, 256, 256) and aligned.image.abs().max() <= 1
        errors = _eye_errors(aligned)
        template.append(errors[0])
        moved.append(errors[1])
    template, moved = np.concatenate(template) / 256, np.concatenate(moved)
    assert np.median(moved) <= SELF_TOLERANCE[0] and moved.max() <= SELF_TOLERANCE[1], moved.round(1)
    median, largest = TEMPLATE_TOLERANCE[name]
    assert np.median(template) <= median and template.max() <= largest, (template * 256).round(1)


@pytest.mark.slow
def test_no_face_is_a_one_line_error_naming_the_file(dlib_ready, tmp_path):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    flat = Image.new("RGB", (300, 200), (90, 140, 200))
    for name, photo in (("noise.png", noise), ("flat.png", flat)):
        with pytest.raises(ImageError, match=rf"^{name}: no face found") as info:
            A.align_faces(photo, A.ffhq_framing(), name=name)
        assert "\n" not in str(info.value)
    skimage_data = pytest.importorskip("skimage.data")
    coffee = tmp_path / "coffee.jpg"
    Image.fromarray(skimage_data.coffee()).save(coffee)
    assert main(["align", str(coffee), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_faces_left_to_right_and_one_by_index(dlib_ready, two_faces):
    photo = open_image(two_faces)
    faces = A.detect_faces(photo)
    assert len(faces) == 2
    assert faces[0].key_points()[:2, 0].mean() < 300 < faces[1].key_points()[:2, 0].mean()
    every = A.align_faces(photo, A.utkface_framing(128))
    assert [f.index for f in every] == [0, 1]
    [right] = A.align_faces(photo, A.utkface_framing(128), face=1)
    assert right.index == 1 and torch.equal(right.image, every[1].image)
    assert A.align_faces(photo, A.utkface_framing(128), face=-1)[0].index == 1
    with pytest.raises(ImageError, match="face 2 requested but 2 found"):
        A.align_faces(photo, A.utkface_framing(128), face=2, name="two.png")
    if A.dlib_model_file(A.CNN_MODEL) is not None:  # the CNN detector alone finds the same two faces
        cnn = A.detect_faces(photo, detector="cnn")
        assert [f.detector for f in cnn] == ["cnn", "cnn"]
        assert np.abs(np.stack([f.key_points() for f in cnn]) - np.stack([f.key_points() for f in faces])).max() < 6


def test_rotated_photo_is_turned_upright(dlib_ready, photos):
    upright = open_image(photos["celeba"][1])
    turned = upright.rotate(30, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128))
    framing = A.utkface_framing(256)
    [aligned] = A.align_faces(turned, framing)
    [reference] = A.align_faces(upright, framing)
    # PIL turns counter-clockwise; undoing it turns the face clockwise: +30° in image coordinates (y down).
    turn = _rotation_degrees(aligned.alignment.matrix) - _rotation_degrees(reference.alignment.matrix)
    assert turn == pytest.approx(30.0, abs=2.0)
    assert _eye_errors(aligned)[1].max() <= SELF_TOLERANCE[1]


def test_exif_orientation_is_applied(dlib_ready, photos, tmp_path):
    upright = open_image(photos["celeba"][2])
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways writes
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    path = tmp_path / "sideways.jpg"
    stored.save(path, exif=exif, quality=95)
    with Image.open(path) as raw:
        assert raw.size == (upright.height, upright.width)
    photo = open_image(path)
    assert photo.size == upright.size
    [face] = A.detect_faces(photo)
    [reference] = A.detect_faces(upright)
    assert np.abs(face.key_points() - reference.key_points()).max() < 3.0  # JPEG re-encoding moves them a little


def test_tiny_photo_is_upscaled_and_too_small_is_refused(dlib_ready, photos):
    small = open_image(photos["utkface"][1]).resize((40, 40), Image.Resampling.LANCZOS)
    [aligned] = A.align_faces(small, A.utkface_framing(256), name="small.png")
    assert aligned.alignment.scale < 0.2  # 40 px of photo stretched over 256 px of crop
    assert _eye_errors(aligned)[1].max() <= 2 * SELF_TOLERANCE[1]  # a blurry crop: looser
    with pytest.raises(ImageError, match=r"^tiny.png: 12×12 px is too small"):
        A.align_faces(small.resize((12, 12)), A.utkface_framing(), name="tiny.png")


def test_measure_framing_recovers_the_template_it_was_aligned_to(dlib_ready, photos):
    framing = A.utkface_framing(200)
    crops = [tensor_to_pil(_largest(A.align_faces(open_image(p), framing)).image) for p in photos["celeba"]]
    measured = A.measure_framing(crops, size=64, name="check")
    assert measured.count + measured.missed + measured.rejected == len(crops) and measured.count >= 4
    got, want = measured.framing.points() / 64, framing.points() / 200
    assert np.abs(got - want).max() < 0.02, got


# ----------------------------------------------------------------------------- paste-back

def test_paste_back_changes_nothing_outside_the_mask(dlib_ready, photos):
    photo = open_image(photos["celeba"][3])
    [aligned] = A.align_faces(photo, A.ffhq_framing(256))
    mask = A.face_mask(aligned.alignment)
    outside, inside = mask == 0, mask >= 0.999
    assert outside.sum() > 0.3 * mask.size and inside.sum() > 0.05 * mask.size
    before = np.asarray(photo)
    # The unedited face: exactly the photo outside, close to it inside (two resamplings).
    same = np.asarray(A.paste_back(photo, aligned.image, aligned.alignment))
    assert same.shape == before.shape and np.array_equal(same[outside], before[outside])
    assert np.abs(same[inside].astype(int) - before[inside]).mean() < 4.0
    # A grey 64 px face (another resolution than the crop) replaces the face only.
    grey = np.asarray(A.paste_back(photo, torch.zeros(3, 64, 64), aligned.alignment))
    assert np.array_equal(grey[outside], before[outside])
    assert np.abs(grey[inside].astype(int) - 128).max() <= 1
    # The JSON record pastes back identically.
    record = A.FaceAlignment.from_dict(json.loads(json.dumps(aligned.alignment.to_dict())))
    again = np.asarray(A.paste_back(photo, aligned.image, record))
    assert np.array_equal(again, same)
    with pytest.raises(ImageError, match="aligned in a"):
        A.paste_back(photo.resize((100, 100)), aligned.image, aligned.alignment)


# ----------------------------------------------------------------------------- command line

def test_cli_align_writes_crops_records_and_report(dlib_ready, two_faces, photos, tmp_path):
    out = tmp_path / "aligned"
    single = photos["utkface"][2]
    assert main(["align", str(two_faces), str(single), "--size", "64", "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    stem = single.stem
    assert [f["name"] for f in manifest["faces"]] == ["two_face0", "two_face1", f"{stem}_face0"]
    assert manifest["framing"]["size"] == 64 and "iBUG 300-W" in manifest["landmark_terms"]
    for name in ("two_face0.png", "two_face1.png", f"{stem}_face0.png", "two_faces.jpg", "sheet.png", "index.html"):
        assert (out / name).is_file(), name
    with Image.open(out / "two_face1.png") as crop:
        assert crop.size == (64, 64)
    record = json.loads((out / "two_face1.json").read_text())
    assert np.allclose(np.array(record["matrix"]) @ np.array(record["inverse"]), np.eye(3), atol=1e-9)
    assert len(record["landmarks"]) == 68
    # --face picks one face; out of range is a one-line error.
    assert main(["align", str(two_faces), "--face", "1", "--out", str(tmp_path / "one"), "--quiet"]) == 0
    assert [f["name"] for f in json.loads((tmp_path / "one" / "manifest.json").read_text())["faces"]] == ["two_face1"]
    assert main(["align", str(two_faces), "--face", "3", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert main(["align", str(two_faces), "--size", "4", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert not (tmp_path / "bad").exists()


def test_cli_align_takes_the_framing_from_the_pack(dlib_ready, photos, tmp_path):
    g, e = tiny_networks()
    framing = A.utkface_framing(32)
    pack = save_pack(tmp_path / "pack", name="tiny", generator=g, encoder=e,
                     perceptual_config=default_perceptual_config("torchvision"),
                     extra_config={"framing": framing.to_dict()})
    out = tmp_path / "out"
    assert main(["align", str(photos["celeba"][4]), "--model", str(pack), "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["framing"] == framing.to_dict() and "tiny" in manifest["framing_source"]
    with Image.open(out / f"{photos['celeba'][4].stem}_face0.png") as crop:
        assert crop.size == (32, 32)
