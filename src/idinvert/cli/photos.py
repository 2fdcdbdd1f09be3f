"""Ordinary photos in, full photos out: alignment before inversion and paste-back after editing."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..align import align_faces, check_alignment_available, paste_back
from ..errors import ImageError
from ..images import expand_inputs, is_image_file, open_image, unique_names
from ..pack import ModelPack


@dataclass
class AlignedPhotos:
    """Every aligned face of some photos, flattened, with what paste-back needs."""

    names: list[str]  # one per face: <photo>_face<k>
    faces: torch.Tensor  # [F, 3, R, R] in [-1, 1]
    photos: dict[str, Image.Image] = field(default_factory=dict)  # photo name → the photo
    owners: list[str] = field(default_factory=list)  # per face: its photo's name
    alignments: list = field(default_factory=list)  # per face: align.FaceAlignment


def add_align_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--align", action="store_true",
                   help="detect and align the faces of ordinary photos first (dlib), and paste the results "
                        "back into the full photos")
    p.add_argument("--face", type=int, default=None,
                   help="with --align: only face N of each photo (0 = leftmost; default: all faces)")


def align_photos(pack: ModelPack, inputs: list[str], *, face: int | None = None) -> AlignedPhotos:
    """Align the faces of image files/folders/lists to the pack's framing."""
    check_alignment_available()
    paths = expand_inputs(inputs)
    bad = [p for p in paths if not is_image_file(p)]
    if bad:
        raise ImageError(f"{bad[0]}: --align takes photos (image files, folders or lists)")
    framing = pack.framing()
    result = AlignedPhotos(names=[], faces=torch.empty(0))
    crops = []
    for path, photo_name in zip(paths, unique_names(paths)):
        photo = open_image(path)
        result.photos[photo_name] = photo
        for aligned in align_faces(photo, framing, face=face, name=str(path)):
            result.names.append(f"{photo_name}_face{aligned.index}")
            result.owners.append(photo_name)
            result.alignments.append(aligned.alignment)
            crops.append(aligned.image)
    result.faces = torch.stack(crops)
    return result


def paste_faces(aligned: AlignedPhotos, faces: torch.Tensor) -> dict[str, Image.Image]:
    """Each photo with its faces replaced by ``faces [F, 3, R, R]`` (in the order of ``aligned``)."""
    out = dict(aligned.photos)
    for i, owner in enumerate(aligned.owners):
        out[owner] = paste_back(out[owner], faces[i], aligned.alignments[i])
    return out


def photo_file(name: str, suffix: str) -> str:
    return f"{Path(name).name}_{suffix}.png"
