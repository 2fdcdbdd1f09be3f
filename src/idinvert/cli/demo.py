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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image

from ..attributes import load_predictor
from ..attributes.amounts import (SHOWN_BOUND, Amount, SolvedAmounts, attribute_reader, code_renderer, edit_steps,
                                  format_value, plain_name, predictor_measures, solve_distances)
from ..engine.editing import interpolate
from ..engine.inversion import MAX_STEPS, InversionConfig, default_batch_size, encode
from ..engine.refine import RefineResult, pack_refine_config
from ..engine.tuned import TunedWeights, synthesize_tuned, tuned_between
from ..errors import ConfigError
from ..fileio import StagedOutput, atomic_path, check_output_dir
from ..images import RESAMPLE, save_image, tensor_to_uint8
from ..report import Report, environment, write_outputs
from ..safety import check_int, check_seed, safe_name
from .common import add_device, add_model, add_quiet, open_pack, run_inversion
from .photos import align_photos, paste_faces
from .refining import MAX_REFINE_STEPS, REFINE_BATCH, run_refinement

STRENGTHS = (-3.0, -1.5, 1.5, 3.0)  # raw distances, for packs without an attribute predictor
AGE_YEARS = 15.0  # the age edits: this many years younger and older than the person's predicted age
ON, OFF = 0.9, 0.1  # probabilities of "smile on", "smile off", "glasses on", the other gender
DEMO_REFINE_STEPS = 60  # tuning steps at most (PTI stops earlier once LPIPS ≤ its threshold): the time budget
SWEEP_FRAMES = 13  # frames of the GIF (played forwards, then backwards)
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


def bundled_portrait() -> Image.Image:
    try:
        from skimage import data
    except ImportError:
        raise ConfigError("the bundled portrait comes from scikit-image: pip install scikit-image "
                          "(or pass --photo FILE)") from None
    return Image.fromarray(data.astronaut())


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


@dataclass
class DemoEdit:
    """One edit of the demo: an amount in the attribute's units, or a raw distance."""

    key: str  # file-name part: age_plus15y, smile_on, gender_other, age_d+3 …
    attribute: str
    amount: Amount | None = None  # None: the raw distance below
    distance: float = 0.0
    solved: SolvedAmounts | None = None  # per face, once solved
    distances: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # [F]

    def label(self) -> str:
        """The row label, for the face shown (the first): what was asked, and what it reached (plain ASCII:
        the contact sheet's font has no arrows)."""
        name = plain_name(self.attribute)
        if self.solved is None:
            return f"{name} d = {self.distance:+g} (raw distance: no predictor reads {self.attribute})"
        s, unit = self.solved, self.solved.unit
        start, target, reached = float(s.start[0]), float(s.target[0]), float(s.reached[0])
        if self.amount.by is not None:
            text = f"{name} {self.amount.by:+g} y (reached {format_value(reached, unit)}"
        elif self.attribute == "gender":
            text = (f"Other gender ({'male' if target > 0.5 else 'female'} {format_value(start, unit)} to "
                    f"{format_value(reached, unit)}")
        else:
            text = f"{name} {'on' if target > 0.5 else 'off'} (reached {format_value(reached, unit)}"
        text += f"; d = {float(self.distances[0]):+.2f})"
        if not bool(s.reachable[0]):
            text += f", aimed at {format_value(target, unit)}: not reached within |d| <= {s.bound:g}"
        return text


def plan_edits(attributes: list[str], predictor) -> list[DemoEdit]:
    """The demo's edits for the pack's boundaries: age ∓15 years, smile off and on, the other gender,
    glasses and every other measured attribute to the other side; raw ±3 where nothing measures."""
    if predictor is None:  # the whole page in raw distances, as before units: every strength per attribute
        return [DemoEdit(f"{safe_name(name, 'attribute')}_{d:+g}", name, distance=d)
                for name in attributes for d in STRENGTHS]
    order = {"age": 0, "gender": 1, "smile": 2, "eyeglasses": 3}
    edits = []
    for name in sorted(attributes, key=lambda a: (order.get(a, len(order)), a)):
        key = safe_name(name, "attribute")
        if not predictor_measures(predictor, name):
            edits += [DemoEdit(f"{key}_d{d:+g}", name, distance=d) for d in (STRENGTHS[0], STRENGTHS[-1])]
        elif name == "age":
            edits += [DemoEdit(f"age_{word}{AGE_YEARS:g}y", name, Amount(by=sign * AGE_YEARS))
                      for word, sign in (("minus", -1.0), ("plus", 1.0))]
        elif name == "smile":
            edits += [DemoEdit("smile_off", name, Amount(to=OFF)), DemoEdit("smile_on", name, Amount(to=ON))]
        elif name == "eyeglasses":
            edits.append(DemoEdit("eyeglasses_on", name, Amount(to=ON)))
        else:
            edits.append(DemoEdit(f"{key}_other", name, Amount(flip=ON)))
    return edits


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
            steps = _solve(pack, predictor, codes, tuned, edits)
            edit_images = _render_edits(pack, codes, tuned, edits, steps)  # [F, E, 3, R, R]
            mix_images = _interpolation_images(pack, codes, tuned, args.seed)  # [4, 3, R, R]
            sweep_name, sweep_images = _sweep_images(pack, codes, tuned, edits, steps)
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
            if sweep_images is not None:
                _write_gif(folder / "sweep.gif", sweep_images)
                tables.append(Report(title="Animated", headers=[sweep_name]))
                tables[-1].add_row("sweep", ["sweep.gif"])
            manifest = {"verb": "demo", "photo": str(args.photo or "scikit-image astronaut (public domain)"),
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


# --- the edits --------------------------------------------------------------------------------------------

def _solve(pack, predictor, codes: torch.Tensor, tuned: TunedWeights | None,
           edits: list[DemoEdit]) -> dict[str, torch.Tensor]:
    """Each edit's distance per face (``edit.distances`` ``[F]``), measured on what the page shows (the
    tuned generators' images when tuned); returns each attribute's step: the boundary's ``[L, C]``, or one per
    face ``[F, L, C]`` where the pack edits the attribute locally (``edit_steps``)."""
    render = code_renderer(pack.generator, tuned)
    steps = {a: edit_steps(pack, a, codes, tuned) for a in sorted({e.attribute for e in edits})}
    readers = {}
    for edit in edits:
        if edit.amount is None:
            edit.distances = torch.full((codes.shape[0],), edit.distance)
            continue
        read = readers.setdefault(edit.attribute, attribute_reader(predictor, edit.attribute))
        edit.solved = solve_distances(read, render, codes, steps[edit.attribute], edit.amount,
                                      attribute=edit.attribute, bound=SHOWN_BOUND)
        edit.distances = edit.solved.distances
    return steps


def _render_edits(pack, codes: torch.Tensor, tuned: TunedWeights | None, edits: list[DemoEdit],
                  steps: dict[str, torch.Tensor]) -> torch.Tensor:
    """Every edit of every face in one batched rendering: ``[F, E, 3, R, R]`` on the CPU."""
    if not edits:
        return torch.empty(codes.shape[0], 0, 3, pack.resolution, pack.resolution)
    moved = torch.stack([codes + e.distances.to(codes).view(-1, 1, 1) * steps[e.attribute] for e in edits], dim=1)
    return synthesize_tuned(pack.generator, tuned, moved, batch_size=16).cpu()  # codes [F, E, L, C]


def _interpolation_images(pack, codes: torch.Tensor, tuned: TunedWeights | None, seed: int) -> torch.Tensor:
    """The first face towards a truncated sample of the model; a tuned generator fades to the pack's."""
    g = pack.generator
    z = torch.randn(1, g.z_dim, generator=torch.Generator().manual_seed(seed)).to(pack.device)
    with torch.no_grad():
        other = g.sample_codes(z, truncation_psi=0.7)  # a typical generated face (truncated towards the mean)
    path = interpolate(codes[:1], other, steps=len(STRENGTHS) - 2)[0, 0]  # [4, L, C]
    weights = torch.linspace(0, 1, len(path))
    between = tuned_between(g, tuned.select([0]) if tuned is not None else None, None, weights)
    return synthesize_tuned(g, between, path[:, None])[:, 0].cpu() if between is not None \
        else synthesize_tuned(g, None, path).cpu()


def _sweep_images(pack, codes: torch.Tensor, tuned: TunedWeights | None, edits: list[DemoEdit],
                  steps: dict[str, torch.Tensor]) -> tuple[str | None, torch.Tensor | None]:
    """Frames of the first face along one edit: from age −15 to +15 years when measured, else from d = −3
    to +3 along the first boundary (age when the pack has it)."""
    if not edits:
        return None, None
    ends = [e for e in edits if e.attribute == "age" and e.amount is not None]
    if len(ends) == 2:
        attribute, lo, hi = "age", float(ends[0].distances[0]), float(ends[1].distances[0])
        name = f"age from {ends[0].amount.by:+g} to {ends[1].amount.by:+g} years (d {lo:+.2f} to {hi:+.2f})"
    else:
        attribute = "age" if any(e.attribute == "age" for e in edits) else edits[0].attribute
        lo, hi = STRENGTHS[0], STRENGTHS[-1]
        name = f"{safe_name(attribute, 'attribute')} from {lo:+g} to {hi:+g}"
    distances = torch.linspace(lo, hi, SWEEP_FRAMES).to(codes)
    step = steps[attribute] if steps[attribute].ndim == 2 else steps[attribute][0]  # the first face's
    frames = codes[:1, None] + distances.view(1, -1, 1, 1) * step  # [1, K, L, C]
    return name, synthesize_tuned(pack.generator, tuned.select([0]) if tuned is not None else None, frames,
                                  batch_size=16)[0].cpu()


def _edit_entry(edit: DemoEdit, names: list[str]) -> dict:
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


def _write_unit_edits(folder: Path, aligned, edits: list[DemoEdit], images: torch.Tensor, tuned: bool) -> Report:
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


def _write_raw_edits(folder: Path, aligned, edits: list[DemoEdit], images: torch.Tensor) -> Report:
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
