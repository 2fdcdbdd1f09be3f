"""``idinvert edit``: move inverted photos along a semantic boundary (official ``manipulate.py``)."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import torch

from ..boundaries import Boundary, load_boundary, parse_layers
from ..engine.editing import DEFAULT_DISTANCES, manipulate
from ..engine.inversion import InversionConfig, default_batch_size
from ..engine.invert_folder import Inverted
from ..errors import ConfigError
from ..fileio import StagedOutput, check_output_dir, json_ready
from ..images import save_image
from ..pack import ModelPack
from ..report import Report, environment, write_outputs
from ..safety import check_int
from .common import (add_device, add_model, add_quiet, codes_from_inputs, info, open_pack, parse_pair, render,
                     run_inversion)
from .photos import AlignedPhotos, add_align_options, align_photos, paste_faces, photo_file
from .refining import add_refine_options, refine_missing


def register(sub: argparse._SubParsersAction) -> None:
    start, end, steps = DEFAULT_DISTANCES
    p = sub.add_parser("edit", help="edit inverted photos along a semantic boundary (age, smile, pose …)",
                       description="Move every code of an invert output folder (or photos, inverted first with "
                                   "the default settings) along a boundary: wp'[l] = wp[l] + d·b[l] on the chosen "
                                   "layers, for d in linspace(START, END, STEPS). Writes <name>_ori.png, "
                                   "<name>_inv.png, <name>_stepKK.png, codes.npy [N, STEPS, L, C], manifest.json, "
                                   "sheet.png and index.html into --out.")
    # Python < 3.13 takes '-3,3' for an option; this is the rule 3.13 uses (a value when '-' + digit).
    p._negative_number_matcher = re.compile(r"^-\.?\d")
    p.add_argument("inputs", nargs="+", metavar="INVERT_DIR_OR_IMAGES")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--boundary", type=Path, metavar="FILE",
                       help="boundary .npy: the official dict format, or an array [1, C] or [1, L, C]")
    which.add_argument("--attribute", metavar="NAME", help="a boundary shipped in the model pack, by name")
    p.add_argument("--distances", default=f"{start:g},{end:g}", metavar="START,END",
                   help=f"edit distances d from START to END (default {start:g},{end:g})")
    p.add_argument("--steps", type=int, default=steps, help=f"number of distances (default {steps})")
    p.add_argument("--layers", default=None, metavar="SPEC",
                   help="layers to move, like '0-5' or '2,3,4'; '' = all (default: the boundary file's "
                        "manipulate_layers, else all)")
    add_align_options(p)
    add_refine_options(p)
    add_model(p)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    add_device(p)
    add_quiet(p)
    p.set_defaults(run=run)


MAX_DISTANCE = 100.0  # |d| of an edit; codes are of order 1 and the official range is ±3
MAX_EDIT_STEPS = 1000  # distances per edit (each one image per input)


def run(args: argparse.Namespace) -> int:
    start, end = parse_pair(args.distances, "--distances", limit=MAX_DISTANCE)
    check_int(args.steps, "--steps", 1, MAX_EDIT_STEPS, hint="the number of distances")
    check_output_dir(args.out, inputs=[*args.inputs, args.boundary, args.model])
    pack = open_pack(args)
    path = args.boundary if args.boundary is not None else pack.boundary_file(args.attribute)
    boundary: Boundary = load_boundary(path, pack.code_shape)
    if args.layers is not None:
        pack.generator.require_layerwise("--layers")
    try:
        layers = parse_layers(boundary.layers if args.layers is None else args.layers, pack.code_shape[0])
    except ConfigError as exc:  # only --layers can be wrong here: the file's layers were checked on loading
        raise ConfigError(f"--{exc}") from None
    aligned = align_photos(pack, args.inputs, face=args.face) if args.align else None
    inverted = codes_from_inputs(args, pack, args.inputs) if aligned is None else invert_faces(args, pack, aligned)
    tuning = refine_missing(args, pack, inverted)
    began = time.perf_counter()
    distances = torch.linspace(start, end, args.steps)
    edited = manipulate(inverted.codes, boundary, distances=distances, layers=layers)  # [N, K, L, C]
    images = render(args, pack, edited, "editing", inverted.tuned)
    reconstructions = render(args, pack, inverted.codes, "inversions", inverted.tuned)
    label = args.attribute or path.stem
    with StagedOutput(args.out) as stage:
        np.save(stage.path / "codes.npy", edited.float().cpu().numpy())
        headers = ["Origin", "Inverted"] + [f"Step {k + 1:02d} (d={d:g})" for k, d in enumerate(distances.tolist())]
        report = Report(title=f"Manipulation: {label}", headers=headers)
        for i, name in enumerate(inverted.names):
            save_image(inverted.originals[i], stage.path / f"{name}_ori.png")
            save_image(reconstructions[i], stage.path / f"{name}_inv.png")
            cells = [f"{name}_ori.png", f"{name}_inv.png"]
            for k in range(len(distances)):
                save_image(images[i, k], stage.path / f"{name}_step{k + 1:02d}.png")
                cells.append(f"{name}_step{k + 1:02d}.png")
            report.add_row(name, cells)
        if aligned is not None:
            write_photos(stage.path, report, aligned, reconstructions, images, len(distances))
        manifest = {
            "verb": "edit", "names": inverted.names, "inputs": inverted.source, "model": pack.identity(),
            "boundary": {"file": str(path), "attribute": args.attribute, "layers": layers,
                         "shape": list(boundary.direction.shape), "meta_data": json_ready(boundary.meta)},
            "distances": distances.tolist(), "code_shape": list(edited.shape),
            "seconds": round(time.perf_counter() - began, 3), "environment": environment(pack.device),
            "tuned_generators": inverted.tuned is not None, **tuning,
        }
        write_outputs(stage.path, report, manifest)
    info(args, f"edited {len(inverted.names)} image(s) along {label} → {args.out}/index.html")
    return 0


def invert_faces(args: argparse.Namespace, pack: ModelPack, aligned: AlignedPhotos) -> Inverted:
    result = run_inversion(args, pack, aligned.faces, InversionConfig(), default_batch_size(pack))
    return Inverted(aligned.names, result.codes, aligned.faces, "aligned photos")


def write_photos(folder: Path, report: Report, aligned: AlignedPhotos, reconstructions: torch.Tensor,
                 images: torch.Tensor, steps: int) -> None:
    """Full photos with the inverted and each edited face pasted back, one report row per photo."""
    rows = {name: [photo_file(name, "photo")] for name in aligned.photos}
    for name, photo in aligned.photos.items():
        save_image(photo, folder / photo_file(name, "photo"))
    for name, photo in paste_faces(aligned, reconstructions).items():
        save_image(photo, folder / photo_file(name, "inv_photo"))
        rows[name].append(photo_file(name, "inv_photo"))
    for k in range(steps):
        for name, photo in paste_faces(aligned, images[:, k]).items():
            save_image(photo, folder / photo_file(name, f"step{k + 1:02d}_photo"))
            rows[name].append(photo_file(name, f"step{k + 1:02d}_photo"))
    for name, cells in rows.items():
        report.add_row(f"{name} (photo)", cells)
