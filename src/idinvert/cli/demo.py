"""``idinvert demo``: the whole pipeline on a bundled public-domain portrait, in well under a minute.

Align the face (dlib), invert it (in-domain, 100 steps), tune the generator for it (pivotal tuning
with the pack's own settings, a few dozen steps at most; ``--no-refine`` skips it), edit it in the
attribute's own units — 15 years younger and older than the person's predicted age, smile off and
on, glasses on, the other gender, each found for this face with the pack's attribute predictor —
interpolate towards a second face (a sample of the generator), paste the results back into the full
photo, and write ``index.html`` and ``sheet.png`` (faces large: photo, in-domain and tuned
reconstruction side by side, then one labelled row per edit with the pasted-back photo beside it)
and ``sweep.gif`` (the age edit sweeping from −15 to +15 years and back). A pack without an attribute
predictor is edited by raw boundary distances (d = ±1.5, ±3), labelled as such.

The default photo is scikit-image's ``astronaut`` (Eileen Collins, NASA: public domain).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image

from ..assets import PORTRAIT, bundled_portrait
from ..attributes import load_predictor
from ..engine.inversion import MAX_STEPS, InversionConfig, default_batch_size, encode
from ..engine.refine import RefineResult, pack_refine_config
from ..fileio import StagedOutput, atomic_path, check_output_dir
from ..images import RESAMPLE, save_image, tensor_to_uint8
from ..report import Report, environment, write_outputs
from ..safety import check_int, check_seed, safe_name
from ..showcase import (STRENGTHS, ShowcaseEdit, interpolation_images, plan_edits, render_edits, solve_edits,
                        sweep_images)
from .common import add_device, add_model, add_quiet, open_pack, run_inversion
from .photos import align_photos, paste_faces
from .refining import MAX_REFINE_STEPS, REFINE_BATCH, run_refinement

DEMO_REFINE_STEPS = 60  # tuning steps at most (PTI stops earlier once LPIPS ≤ its threshold): the time budget
SWEEP_SIZE = 256  # side of the GIF in pixels
FACE_CELL = 192  # tile side of faces in sheet.png
SECTIONS = ("align", "encoder", "inversion", "tuning", "edits", "writing")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="align, invert and edit a bundled portrait with the default pack",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photo", type=Path, help="your own photo instead of the bundled portrait")
    p.add_argument("--out", type=Path, default=Path("idinvert-demo"), help="output folder (default ./idinvert-demo)")
    p.add_argument("--steps", type=int, default=100, help="in-domain inversion steps (default 100)")
    p.add_argument("--no-refine", dest="refine", action="store_false",
                   help="skip pivotal tuning: show and edit the in-domain reconstruction only")
    p.add_argument("--refine-steps", type=int, default=None,
                   help=f"pivotal tuning steps at most (default: the pack's, at most {DEMO_REFINE_STEPS}; "
                        f"tuning stops earlier once the reconstruction is close enough)")
    p.add_argument("--seed", type=int, default=7, help="seed of the second face")
    add_model(p)
    add_device(p)
    add_quiet(p)
    p.set_defaults(run=run)


class Timer:
    """Seconds spent per section of the demo (a section may be entered several times)."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.seconds = {name: 0.0 for name in SECTIONS}
        self.running: tuple[str, float] | None = None  # the section being timed and when it began

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.running = (name, time.perf_counter())
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - self.running[1]
            self.running = None

    def report(self) -> dict[str, float]:
        """Seconds per section so far (the running one up to now) and in all."""
        now = time.perf_counter()
        seconds = dict(self.seconds)
        if self.running is not None:
            seconds[self.running[0]] += now - self.running[1]
        return {**{k: round(v, 2) for k, v in seconds.items()}, "total": round(now - self.began, 2)}


def run(args: argparse.Namespace) -> int:
    timer = Timer()
    check_int(args.steps, "--steps", 0, MAX_STEPS)
    if args.refine_steps is not None:
        check_int(args.refine_steps, "--refine-steps", 0, MAX_REFINE_STEPS)
    check_seed(args.seed)
    check_output_dir(args.out, inputs=[args.photo, args.model])
    pack = open_pack(args)
    refine_config = None
    if args.refine:
        steps = args.refine_steps if args.refine_steps is not None \
            else min(pack.refine_settings().get("steps", DEMO_REFINE_STEPS), DEMO_REFINE_STEPS)
        refine_config = pack_refine_config(pack, steps=steps)
    with StagedOutput(args.out) as stage:
        folder = stage.path
        with timer("align"):
            photo_path = args.photo
            if photo_path is None:
                photo_path = folder / "photo.png"
                save_image(bundled_portrait(), photo_path)
            aligned = align_photos(pack, [str(photo_path)], face=None)
            aligned.names = [n.replace("photo_", "") for n in aligned.names]
        with timer("encoder"):
            encoded = encode(pack.encoder, aligned.faces.to(pack.device)) if pack.encoder is not None else None
        with timer("inversion"):
            result = run_inversion(args, pack, aligned.faces, InversionConfig(steps=args.steps),
                                   default_batch_size(pack), init_codes=encoded)
        codes = result.codes  # [F, L, C]
        refined = None
        if refine_config is not None:
            with timer("tuning"):
                refined = run_refinement(args, pack, aligned.faces, codes, refine_config, REFINE_BATCH)
        tuned = refined.tuned if refined is not None else None
        with timer("edits"):
            predictor = load_predictor(pack) if pack.config.get("predictor") else None
            edits = plan_edits(sorted(pack.boundary_files()), predictor)
            steps = solve_edits(pack, predictor, codes, tuned, edits)
            edit_images = render_edits(pack, codes, tuned, edits, steps)  # [F, E, 3, R, R]
            mix_images = interpolation_images(pack, codes, tuned, args.seed)  # [4, 3, R, R]
            sweep_name, sweep_frames = sweep_images(pack, codes, tuned, edits, steps)
        with timer("writing"):
            intro = _write_inversion(folder, pack, aligned, result, refined)
            tables = [intro]
            if edits and predictor is not None:
                tables.append(_write_unit_edits(folder, aligned, edits, edit_images, tuned is not None))
            elif edits:
                tables.append(_write_raw_edits(folder, aligned, edits, edit_images))
            mix = Report(title="Interpolation towards another face (a sample of the model)",
                         headers=["t = 0", "t = 1/3", "t = 2/3", "t = 1"])
            mix.add_row("face", _save_all(folder, mix_images, "interpolation_{k}_face.png"))
            tables.append(mix)
            if sweep_frames is not None:
                _write_gif(folder / "sweep.gif", sweep_frames)
                tables.append(Report(title="Animated", headers=[sweep_name]))
                tables[-1].add_row("sweep", ["sweep.gif"])
            manifest = {"verb": "demo", "photo": str(args.photo or PORTRAIT),
                        "faces": aligned.names, "model": pack.identity(), "steps": args.steps,
                        "strengths": list(STRENGTHS), "attributes": sorted(pack.boundary_files()),
                        "sweep": sweep_name, "losses": result.final_losses(),
                        "refine": None if refined is None else _refine_entry(refined),
                        "edits": [_edit_entry(e, aligned.names) for e in edits],
                        "seconds": None, "timing": None, "environment": environment(pack.device)}
            manifest["timing"] = timer.report()  # writing the files below is the rest of "writing"
            manifest["seconds"] = manifest["timing"]["total"]
            write_outputs(folder, tables, manifest, cell=FACE_CELL, image_size=FACE_CELL)
    timing = timer.report()
    for edit in edits:
        for name, note in zip(aligned.names, edit.solved.notes if edit.solved is not None else []):
            if note:
                print(f"idinvert demo: note: {name}: {note}", file=sys.stderr)
    if not args.quiet:
        print(f"demo written to {args.out.resolve()}/ — open {args.out / 'index.html'} "
              f"(contact sheet: {args.out / 'sheet.png'}); {timing['total']:.0f} s")
        print("time: " + ", ".join(f"{k} {timing[k]:.1f} s" for k in SECTIONS)
              + (f" ({int(refined.steps_run.max())} tuning steps)" if refined is not None else " (no tuning)"))
    return 0


def _edit_entry(edit: ShowcaseEdit, names: list[str]) -> dict:
    entry = {"key": edit.key, "attribute": edit.attribute, "label": edit.label()}
    if edit.solved is None:
        return entry | {"distance": edit.distance}
    amount = {k: v for k, v in (("by", edit.amount.by), ("to", edit.amount.to), ("flip", edit.amount.flip))
              if v is not None}
    return entry | {"amount": amount, "max_distance": edit.solved.bound,
                    "per_image": [{"name": n, **row} for n, row in zip(names, edit.solved.report())]}


def _refine_entry(refined: RefineResult) -> dict:
    c = refined.config
    return {"method": c.method, "steps_max": c.steps, "layers": list(c.layers), "locality": c.locality,
            "per_image": refined.report(), "seconds": round(refined.seconds, 2)}


# --- the page ---------------------------------------------------------------------------------------------

def _write_inversion(folder: Path, pack, aligned, result, refined: RefineResult | None) -> Report:
    """photo | aligned face | in-domain reconstruction | tuned reconstruction | pasted back."""
    shown = refined.reconstructions.cpu() if refined is not None else result.reconstructions.cpu()
    for i, name in enumerate(aligned.names):
        save_image(aligned.faces[i], folder / f"{name}_aligned.png")
        save_image(result.reconstructions[i], folder / f"{name}_inv.png")
        if refined is not None:
            save_image(refined.reconstructions[i], folder / f"{name}_pti.png")
    save_image(next(iter(paste_faces(aligned, shown).values())), folder / "inversion_photo.png")
    first = aligned.names[0]
    headers = ["photo", "aligned face", "in-domain reconstruction"]
    cells = ["photo.png" if (folder / "photo.png").exists() else "", f"{first}_aligned.png", f"{first}_inv.png"]
    label = f"{pack.name}: {len(aligned.names)} face{'s' * (len(aligned.names) > 1)}, the first shown"
    if refined is not None:
        headers.append("tuned reconstruction (PTI)")
        cells.append(f"{first}_pti.png")
        before, after = float(refined.before["lpips"][0]), float(refined.after["lpips"][0])
        label += f"; LPIPS to the face {before:.3f} in-domain, {after:.3f} tuned ({int(refined.steps_run[0])} steps)"
    report = Report(title=f"idinvert demo: {pack.name}", headers=headers + ["pasted back"])
    report.add_row(label, cells + ["inversion_photo.png"])
    return report


def _write_unit_edits(folder: Path, aligned, edits: list[ShowcaseEdit], images: torch.Tensor, tuned: bool) -> Report:
    """One row per edit, labelled in its units: the reconstruction, the edit and the photo with it."""
    recon = f"{aligned.names[0]}_{'pti' if tuned else 'inv'}.png"
    report = Report(title="Edits in the attribute's own units, found for this face with the pack's attribute "
                          "predictor" + (" on the tuned generator's images" if tuned else ""),
                    headers=["reconstruction", "edited", "edited, pasted back"])
    for k, edit in enumerate(edits):
        save_image(images[0, k], folder / f"{edit.key}_face.png")
        save_image(next(iter(paste_faces(aligned, images[:, k]).values())), folder / f"{edit.key}_photo.png")
        report.add_row(edit.label(), [recon, f"{edit.key}_face.png", f"{edit.key}_photo.png"])
    return report


def _write_raw_edits(folder: Path, aligned, edits: list[ShowcaseEdit], images: torch.Tensor) -> Report:
    """Without a predictor: one row per attribute at d = −3, −1.5, the reconstruction, +1.5, +3, then the
    photo with the +3 edit pasted back (``edits`` holds each attribute's STRENGTHS in order)."""
    report = Report(title="Edits of the reconstruction along each attribute's boundary, in raw distances d "
                          "(this pack has no attribute predictor to measure them in years or per cent)",
                    headers=[f"d = {d:+g}" for d in STRENGTHS[:2]] + ["d = 0 (reconstruction)"]
                    + [f"d = {d:+g}" for d in STRENGTHS[2:]] + [f"photo, d = {STRENGTHS[-1]:+g}"])
    recon = f"{aligned.names[0]}_{'pti' if (folder / f'{aligned.names[0]}_pti.png').exists() else 'inv'}.png"
    count = len(STRENGTHS)
    for start in range(0, len(edits), count):
        group = edits[start:start + count]
        faces = []
        for k, edit in enumerate(group, start):
            save_image(images[0, k], folder / f"{edit.key}_face.png")
            faces.append(f"{edit.key}_face.png")
        photo = f"{group[-1].key}_photo.png"
        save_image(next(iter(paste_faces(aligned, images[:, start + count - 1]).values())), folder / photo)
        report.add_row(safe_name(group[0].attribute, "attribute"), faces[:2] + [recon] + faces[2:] + [photo])
    return report


def _save_all(folder: Path, images: torch.Tensor, pattern: str) -> list[str]:
    names = []
    for k, image in enumerate(images):
        names.append(pattern.format(k=k))
        save_image(image, folder / names[-1])
    return names


def _write_gif(path: Path, images: torch.Tensor) -> None:
    # each frame to 256 colours by fast octree quantisation (20× quicker than GIF's default median cut)
    frames = [Image.fromarray(tensor_to_uint8(x)).resize((SWEEP_SIZE, SWEEP_SIZE), RESAMPLE)
              .quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE) for x in images]
    frames += frames[-2:0:-1]
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=120, loop=0)
