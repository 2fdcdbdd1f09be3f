"""``idinvert align``: ordinary photos → face crops in the model's framing.

Writes ``<name>_face<k>.png`` (k = 0 is the leftmost face), ``<name>_face<k>.json`` (landmarks,
the photo→crop matrix and its inverse, for pasting an edited face back), ``<name>_faces.jpg``
(the photo with the numbered faces marked), ``manifest.json``, ``sheet.png`` and ``index.html``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image, ImageDraw

from ..align import (DETECTORS, LANDMARK_TERMS, AlignedFace, Framing, align_faces, check_alignment_available,
                     ffhq_framing, framing_from_config, utkface_framing)
from ..errors import CheckpointError, ConfigError
from ..fileio import StagedOutput, check_output_dir, write_json
from ..images import RESAMPLE, expand_inputs, open_image, save_image, unique_names
from ..pack import read_pack_config, resolve_pack
from ..report import Report, environment, write_outputs
from .common import add_model, add_quiet, info, progress

FRAMINGS = ("auto", "ffhq", "utkface")
PREVIEW_SIDE = 512


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align", help="find the faces in photos and align them to the model's framing",
                       description="Detect faces (dlib) and write aligned crops <name>_face<k>.png (k = 0 is the "
                                   "leftmost face), <name>_face<k>.json with landmarks and transforms, "
                                   "manifest.json, sheet.png and index.html into --out. The framing comes from "
                                   "the model pack (--model, or the default pack when installed), else the FFHQ "
                                   f"recipe. Landmarks: {LANDMARK_TERMS}.")
    p.add_argument("photos", nargs="+", metavar="PHOTO_OR_DIR_OR_LIST")
    p.add_argument("--face", type=int, default=None, metavar="N",
                   help="align only face N of each photo (0 = leftmost; default: every face)")
    add_model(p)
    p.add_argument("--framing", choices=FRAMINGS, default="auto",
                   help="auto: the pack's framing (FFHQ when it has none, or without a pack); ffhq: the FFHQ "
                        "recipe of the official models; utkface: the default pack's UTKFace crops")
    p.add_argument("--size", type=int, default=None,
                   help="side of the crops in pixels (default: the pack's framing size, else 256)")
    p.add_argument("--detector", choices=DETECTORS, default="auto",
                   help="auto: HOG, with the CNN to confirm weak faces or when HOG finds none (default)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    add_quiet(p)
    p.set_defaults(run=run)


def choose_framing(args: argparse.Namespace) -> tuple[Framing, str]:
    """The framing and a sentence saying where it came from."""
    if args.framing == "ffhq":
        framing, source = ffhq_framing(), "the FFHQ recipe (--framing ffhq)"
    elif args.framing == "utkface":
        framing, source = utkface_framing(), "the UTKFace template (--framing utkface)"
    else:
        config, folder = None, None
        try:
            folder = resolve_pack(args.model)
            config = read_pack_config(folder)
        except CheckpointError:
            if args.model is not None:
                raise
        pack_framing = framing_from_config(config, what=f"{folder}/config.json") if config else None
        if pack_framing is not None:
            framing, source = pack_framing, f"model pack {config.get('name', folder.name)!r}"
        elif config is not None:
            framing = ffhq_framing(int(config["generator"]["resolution"]))
            source = f"the FFHQ recipe (model pack {config.get('name', folder.name)!r} stores no framing)"
        else:
            framing, source = ffhq_framing(), "the FFHQ recipe (no model pack installed)"
    if args.size is not None:
        if not 8 <= args.size <= 4096:
            raise ConfigError(f"--size {args.size}: use 8 to 4096 pixels")
        framing = framing.with_size(args.size)
    return framing, source


def run(args: argparse.Namespace) -> int:
    paths = expand_inputs(args.photos)
    check_output_dir(args.out, inputs=[*args.photos, *paths, args.model])
    check_alignment_available()
    framing, source = choose_framing(args)
    names = unique_names(paths)
    info(args, f"framing: {source}, {framing.size}×{framing.size} px")
    report = Report(title="Face alignment", headers=["Photo", "Aligned face", "Detector", "Scale"])
    records, start = [], time.perf_counter()
    with StagedOutput(args.out) as stage, progress(args, len(paths), "aligning") as bar:
        for path, name in zip(paths, names):
            photo = open_image(path)
            faces = align_faces(photo, framing, face=args.face, detector=args.detector, name=str(path))
            preview = f"{name}_faces.jpg"
            save_image(draw_faces(photo, faces), stage.path / preview)
            for aligned in faces:
                records.append(write_face(stage.path, name, path, aligned))
                report.add_row(f"{name}_face{aligned.index}",
                               [preview, records[-1]["file"], f"{aligned.alignment.face.detector} "
                                f"{aligned.alignment.face.score:.2f}",
                                f"{aligned.alignment.scale:.2f} px/px"])
            bar.update(1)
        seconds = time.perf_counter() - start
        manifest = {"verb": "align", "inputs": [str(p) for p in paths], "names": names, "faces": records,
                    "framing": framing.to_dict(), "framing_source": source, "face_order": "left to right",
                    "landmark_terms": LANDMARK_TERMS, "seconds": round(seconds, 3),
                    "seconds_per_photo": round(seconds / len(paths), 3), "environment": environment("cpu")}
        write_outputs(stage.path, report, manifest)
    info(args, f"aligned {len(records)} face(s) from {len(paths)} photo(s) in {seconds:.1f} s "
               f"→ {args.out}/index.html")
    return 0


def write_face(folder: Path, name: str, source: Path, aligned: AlignedFace) -> dict:
    stem = f"{name}_face{aligned.index}"
    save_image(aligned.image, folder / f"{stem}.png")
    write_json(folder / f"{stem}.json", {"photo": str(source), "face": aligned.index, "image": f"{stem}.png",
                                         **aligned.alignment.to_dict()})
    face = aligned.alignment.face
    return {"name": stem, "photo": str(source), "face": aligned.index, "file": f"{stem}.png",
            "record": f"{stem}.json", "detector": face.detector, "score": round(face.score, 4),
            "scale": round(aligned.alignment.scale, 4)}


def draw_faces(photo: Image.Image, faces: list[AlignedFace]) -> Image.Image:
    """A square preview: the photo letterboxed, each face's box, eyes and mouth, and its number."""
    factor = PREVIEW_SIDE / max(photo.size)
    small = photo.resize((max(1, round(photo.width * factor)), max(1, round(photo.height * factor))), RESAMPLE)
    canvas = Image.new("RGB", (PREVIEW_SIDE, PREVIEW_SIDE), (255, 255, 255))
    ox, oy = (PREVIEW_SIDE - small.width) // 2, (PREVIEW_SIDE - small.height) // 2
    canvas.paste(small, (ox, oy))
    draw = ImageDraw.Draw(canvas)
    for aligned in faces:
        face = aligned.alignment.face
        box = [v * factor + o for v, o in zip(face.box, (ox, oy, ox, oy))]
        draw.rectangle(box, outline=(0, 255, 0), width=2)
        for x, y in face.key_points():
            x, y = x * factor + ox, y * factor + oy
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(255, 0, 0))
        draw.text((box[0] + 3, box[1] + 2), str(aligned.index), fill=(0, 255, 0))
    return canvas
