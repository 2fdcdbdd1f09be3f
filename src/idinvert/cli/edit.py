"""``idinvert edit``: move inverted photos along a semantic boundary (official ``manipulate.py``)."""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..attributes import load_predictor
from ..attributes.amounts import (DEFAULT_BOUND, Amount, SolvedAmounts, attribute_reader, boundary_step, check_amount,
                                  code_renderer, format_value, localized, solve_distances)
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
    p.add_argument("--distances", default=None, metavar="START,END",
                   help=f"edit distances d from START to END (default {start:g},{end:g})")
    p.add_argument("--steps", type=int, default=None, help=f"number of distances (default {steps})")
    p.add_argument("--by", type=float, default=None, metavar="YEARS",
                        help="instead of distances: make each face this many years older (--by +15) or younger "
                             "(--by -15), as the pack's attribute predictor reads it; with --attribute age")
    p.add_argument("--to", type=float, default=None, metavar="P",
                        help="instead of distances: edit each face until the pack's attribute predictor gives the "
                             "yes/no attribute this probability (--to 0.9: smiling; --to 0.1: not smiling)")
    p.add_argument("--max-distance", type=float, default=None, metavar="D",
                   help=f"with --by/--to: the largest |d| searched per face (default {DEFAULT_BOUND:g}); a target "
                        f"beyond it keeps the closest distance and gets a note")
    p.add_argument("--whole-face", action="store_true",
                   help="with --by/--to: move along the boundary itself even where the pack edits the attribute "
                        "locally (dcgan-faces64's smile keeps the face outside the mouth by default)")
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


def amount_of(args: argparse.Namespace) -> Amount | None:
    """--by/--to as an Amount (None for an edit by distances), every conflict a one-line error."""
    if args.by is None and args.to is None:
        if args.max_distance is not None:
            raise ConfigError("--max-distance bounds the search of --by/--to; with --distances give the distances "
                              "themselves")
        if getattr(args, "whole_face", False):
            raise ConfigError("--whole-face chooses how --by/--to move a face; edits by --distances always move "
                              "along the boundary itself")
        return None
    if args.by is not None and args.to is not None:
        raise ConfigError("give either --by (a change in years, for age) or --to (a probability, for yes/no "
                          "attributes), not both")
    option = "--by" if args.by is not None else "--to"
    value = args.by if args.by is not None else args.to
    if not math.isfinite(value):
        raise ConfigError(f"{option} {value}: use a finite number (like --by +15 or --to 0.9)")
    given = [name for name, value in (("--distances", args.distances), ("--steps", args.steps)) if value is not None]
    if given:
        raise ConfigError(f"{option} finds one distance per face; leave out {' and '.join(given)} (or edit by "
                          f"--distances without {option})")
    if args.attribute is None:
        raise ConfigError(f"{option} needs --attribute NAME: the pack's attribute predictor measures the amount "
                          f"along that attribute's boundary")
    amount = Amount(by=args.by) if args.by is not None else Amount(to=args.to)
    check_amount(amount, args.attribute)
    bound = DEFAULT_BOUND if args.max_distance is None else args.max_distance
    if not (math.isfinite(bound) and 0 < bound <= MAX_DISTANCE):
        raise ConfigError(f"--max-distance {bound:g}: use a positive number up to {MAX_DISTANCE:g} "
                          f"(default {DEFAULT_BOUND:g})")
    args.max_distance = bound
    return amount


def run(args: argparse.Namespace) -> int:
    amount = amount_of(args)
    default_start, default_end, default_steps = DEFAULT_DISTANCES
    start, end = parse_pair(args.distances, "--distances", limit=MAX_DISTANCE) if args.distances is not None \
        else (default_start, default_end)
    steps = default_steps if args.steps is None else args.steps
    check_int(steps, "--steps", 1, MAX_EDIT_STEPS, hint="the number of distances")
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
    read = None
    if amount is not None:
        if not pack.config.get("predictor"):
            raise ConfigError(f"--by/--to measure the edit with the pack's attribute predictor, and pack "
                              f"{pack.name!r} has none; edit by --distances, or train one with "
                              f"`idinvert train-predictor --pack ...`")
        read = attribute_reader(load_predictor(pack), args.attribute)
    aligned = align_photos(pack, args.inputs, face=args.face) if args.align else None
    inverted = codes_from_inputs(args, pack, args.inputs) if aligned is None else invert_faces(args, pack, aligned)
    tuning = refine_missing(args, pack, inverted)
    began = time.perf_counter()
    solved, step = None, None
    if amount is None:
        distances = torch.linspace(start, end, steps)
        edited = manipulate(inverted.codes, boundary, distances=distances, layers=layers)  # [N, K, L, C]
    else:  # one distance per face, found with the pack's predictor on what the user gets (tuned or not)
        step = boundary_step(boundary, pack.code_shape, layers).to(inverted.codes)  # [L, C]
        if args.attribute is not None and args.layers is None and not args.whole_face:
            step = localized(pack, args.attribute, step, inverted.codes, inverted.tuned)  # [N, L, C] where local
        solved = solve_distances(read, code_renderer(pack.generator, inverted.tuned), inverted.codes, step, amount,
                                 attribute=args.attribute, bound=args.max_distance)
        distances = solved.distances
        edited = (inverted.codes + solved.distances.to(inverted.codes).view(-1, 1, 1) * step)[:, None]  # [N, 1, L, C]
    images = render(args, pack, edited, "editing", inverted.tuned)
    reconstructions = render(args, pack, inverted.codes, "inversions", inverted.tuned)
    label = args.attribute or path.stem
    with StagedOutput(args.out) as stage:
        np.save(stage.path / "codes.npy", edited.float().cpu().numpy())
        if solved is None:
            headers = ["Origin", "Inverted"] + [f"Step {k + 1:02d} (d={d:g})" for k, d in enumerate(distances.tolist())]
        else:
            headers = ["Origin", "Inverted", f"Step 01 ({label} {amount.describe(solved.unit)})"]
        report = Report(title=f"Manipulation: {label}", headers=headers)
        for i, name in enumerate(inverted.names):
            save_image(inverted.originals[i], stage.path / f"{name}_ori.png")
            save_image(reconstructions[i], stage.path / f"{name}_inv.png")
            cells = [f"{name}_ori.png", f"{name}_inv.png"]
            for k in range(edited.shape[1]):
                save_image(images[i, k], stage.path / f"{name}_step{k + 1:02d}.png")
                cells.append(f"{name}_step{k + 1:02d}.png")
            report.add_row(name if solved is None else f"{name}: {row_label(solved, i)}", cells)
        if aligned is not None:
            write_photos(stage.path, report, aligned, reconstructions, images, edited.shape[1])
        manifest = {
            "verb": "edit", "names": inverted.names, "inputs": inverted.source, "model": pack.identity(),
            "boundary": {"file": str(path), "attribute": args.attribute, "layers": layers,
                         "shape": list(boundary.direction.shape), "meta_data": json_ready(boundary.meta)},
            "distances": distances.tolist(), "code_shape": list(edited.shape),
            "seconds": round(time.perf_counter() - began, 3), "environment": environment(pack.device),
            "tuned_generators": inverted.tuned is not None, **tuning,
        }
        if solved is not None:  # "distances" then holds one distance per face, in the order of "names"
            manifest["amount"] = amount_entry(args, amount, solved, inverted.names) | {"local": step.ndim == 3}
        write_outputs(stage.path, report, manifest)
    if solved is not None:
        for name, note in zip(inverted.names, solved.notes):
            if note:  # a warning, shown even with --quiet: the face did not get the amount asked for
                print(f"idinvert edit: note: {name}: {note}", file=sys.stderr)
    info(args, f"edited {len(inverted.names)} image(s) along {label} → {args.out}/index.html")
    return 0


def row_label(solved: SolvedAmounts, i: int) -> str:
    """What the report shows beside a face: its value before and after, and the distance."""
    unit = solved.unit
    text = (f"{format_value(float(solved.start[i]), unit)} to {format_value(float(solved.reached[i]), unit)} "
            f"(target {format_value(float(solved.target[i]), unit)}, d = {float(solved.distances[i]):+.2f})")
    return text if bool(solved.reachable[i]) else text + f"; not reached within |d| <= {solved.bound:g}"


def amount_entry(args: argparse.Namespace, amount: Amount, solved: SolvedAmounts, names: list[str]) -> dict:
    """The manifest's record of an edit in units: what was asked and, per face, what it took and got."""
    asked = {"by": amount.by} if amount.by is not None else {"to": amount.to}
    return {"attribute": solved.attribute, "unit": solved.unit, **asked, "max_distance": solved.bound,
            "reached_all": bool(solved.reachable.all()),
            "per_image": [{"name": name, **row} for name, row in zip(names, solved.report())]}


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
