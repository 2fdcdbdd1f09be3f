"""``idinvert demo``: the whole pipeline on a bundled public-domain portrait, in well under a minute.

Align the face (dlib), invert it (in-domain, 100 steps), apply every attribute edit of the pack at
two strengths in both directions, interpolate towards a second face (a sample of the generator),
paste the results back into the full photo, and write ``index.html`` and ``sheet.png`` (faces
large: the inversion, then one labelled row per attribute with the pasted-back photo beside it)
and ``sweep.gif`` (one edit sweeping from −3 to +3 and back).

The default photo is scikit-image's ``astronaut`` (Eileen Collins, NASA: public domain).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image

from ..boundaries import load_boundary
from ..engine.editing import interpolate, manipulate
from ..engine.inversion import MAX_STEPS, InversionConfig, default_batch_size
from ..engine.tuned import synthesize
from ..errors import ConfigError
from ..fileio import StagedOutput, atomic_path, check_output_dir
from ..images import RESAMPLE, save_image, tensor_to_uint8
from ..report import Report, environment, write_outputs
from ..safety import check_int, check_seed, safe_name
from .common import add_device, add_model, add_quiet, open_pack, run_inversion
from .photos import align_photos, paste_faces

STRENGTHS = (-3.0, -1.5, 1.5, 3.0)
SWEEP_FRAMES = 13  # frames from −3 to +3 in the GIF (played forwards, then backwards)
SWEEP_SIZE = 256  # side of the GIF in pixels
FACE_CELL = 192  # tile side of faces in sheet.png


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="align, invert and edit a bundled portrait with the default pack",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photo", type=Path, help="your own photo instead of the bundled portrait")
    p.add_argument("--out", type=Path, default=Path("idinvert-demo"), help="output folder (default ./idinvert-demo)")
    p.add_argument("--steps", type=int, default=100, help="in-domain inversion steps (default 100)")
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


def run(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    check_int(args.steps, "--steps", 0, MAX_STEPS)
    check_seed(args.seed)
    check_output_dir(args.out, inputs=[args.photo, args.model])
    pack = open_pack(args)
    with StagedOutput(args.out) as stage:
        folder = stage.path
        photo_path = args.photo
        if photo_path is None:
            photo_path = folder / "photo.png"
            save_image(bundled_portrait(), photo_path)
        aligned = align_photos(pack, [str(photo_path)], face=None)
        aligned.names = [n.replace("photo_", "") for n in aligned.names]
        config = InversionConfig(steps=args.steps)
        result = run_inversion(args, pack, aligned.faces, config, default_batch_size(pack))
        codes = result.codes  # [F, L, C]
        intro = Report(title=f"idinvert demo: {pack.name}",
                       headers=["photo", "aligned face", "reconstruction", "pasted back"])
        _write_inversion(folder, intro, aligned, result)
        edits = Report(title="Edits of the reconstruction along each attribute's boundary",
                       headers=[f"d = {d:+g}" for d in STRENGTHS[:2]] + ["d = 0 (reconstruction)"]
                       + [f"d = {d:+g}" for d in STRENGTHS[2:]] + [f"photo, d = {STRENGTHS[-1]:+g}"])
        boundaries = sorted(pack.boundary_files().items())
        for name, relative in boundaries:
            edits.add_row(name, _edit_cells(folder, pack, aligned, codes, name, relative))
        mix = Report(title="Interpolation towards another face (a sample of the model)",
                     headers=["t = 0", "t = 1/3", "t = 2/3", "t = 1"])
        mix.add_row("face", _interpolation_cells(folder, pack, aligned, codes, args.seed))
        sweep = _write_sweep(folder, pack, codes, boundaries)
        manifest = {"verb": "demo", "photo": str(args.photo or "scikit-image astronaut (public domain)"),
                    "faces": aligned.names, "model": pack.identity(), "steps": args.steps,
                    "strengths": list(STRENGTHS), "attributes": sorted(pack.boundary_files()),
                    "sweep": sweep, "losses": result.final_losses(),
                    "seconds": round(time.perf_counter() - began, 2), "environment": environment(pack.device)}
        tables = [intro] + ([edits] if boundaries else []) + [mix]
        if sweep is not None:
            tables.append(Report(title="Animated", headers=[sweep]))
            tables[-1].add_row("sweep", ["sweep.gif"])
        write_outputs(folder, tables, manifest, cell=FACE_CELL, image_size=FACE_CELL)
    if not args.quiet:
        print(f"demo written to {args.out.resolve()}/ — open {args.out / 'index.html'} "
              f"(contact sheet: {args.out / 'sheet.png'}); {time.perf_counter() - began:.0f} s")
    return 0


def _write_inversion(folder: Path, report: Report, aligned, result) -> None:
    pasted = paste_faces(aligned, result.reconstructions.cpu())
    for i, name in enumerate(aligned.names):
        save_image(aligned.faces[i], folder / f"{name}_aligned.png")
        save_image(result.reconstructions[i], folder / f"{name}_inv.png")
    save_image(next(iter(pasted.values())), folder / "inversion_photo.png")
    report.add_row(f"in-domain inversion ({len(aligned.names)} face{'s' * (len(aligned.names) > 1)}; the first shown)",
                   ["photo.png" if (folder / "photo.png").exists() else "", f"{aligned.names[0]}_aligned.png",
                    f"{aligned.names[0]}_inv.png", "inversion_photo.png"])


def _edit_cells(folder: Path, pack, aligned, codes: torch.Tensor, name: str, relative: str) -> list[str]:
    """Face tiles at −3, −1.5, the reconstruction, +1.5, +3, then the photo with the +3 edit pasted back."""
    boundary = load_boundary(pack.file(relative), pack.code_shape)
    name = safe_name(name, "attribute")  # a name from the pack's config.json becomes a file name
    edited = manipulate(codes, boundary, distances=torch.tensor(STRENGTHS))  # [F, 4, L, C]
    images = synthesize(pack.generator, edited).cpu()
    faces = []
    for k, d in enumerate(STRENGTHS):
        save_image(images[0, k], folder / f"{name}_{d:+g}_face.png")
        faces.append(f"{name}_{d:+g}_face.png")
    photo = f"{name}_{STRENGTHS[-1]:+g}_photo.png"
    save_image(next(iter(paste_faces(aligned, images[:, -1]).values())), folder / photo)
    return faces[:2] + [f"{aligned.names[0]}_inv.png"] + faces[2:] + [photo]


def _interpolation_cells(folder: Path, pack, aligned, codes: torch.Tensor, seed: int) -> list[str]:
    g = pack.generator
    z = torch.randn(1, g.z_dim, generator=torch.Generator().manual_seed(seed)).to(pack.device)
    with torch.no_grad():
        other = g.sample_codes(z, truncation_psi=0.7)  # a typical generated face (truncated towards the mean)
    path = interpolate(codes[:1], other, steps=len(STRENGTHS) - 2)[0, 0]  # [4, L, C]
    images = synthesize(g, path).cpu()
    cells = []
    for k in range(len(STRENGTHS)):
        save_image(images[k], folder / f"interpolation_{k}_face.png")
        cells.append(f"interpolation_{k}_face.png")
    return cells


def _write_sweep(folder: Path, pack, codes: torch.Tensor, boundaries: list[tuple[str, str]]) -> str | None:
    """``sweep.gif``: the face moved from −3 to +3 and back along one boundary (age when the pack has it)."""
    if not boundaries:
        return None
    table = dict(boundaries)
    name = "age" if "age" in table else boundaries[0][0]
    boundary = load_boundary(pack.file(table[name]), pack.code_shape)
    distances = torch.linspace(STRENGTHS[0], STRENGTHS[-1], SWEEP_FRAMES)
    images = synthesize(pack.generator, manipulate(codes[:1], boundary, distances=distances))[0].cpu()
    frames = [Image.fromarray(tensor_to_uint8(x)).resize((SWEEP_SIZE, SWEEP_SIZE), RESAMPLE) for x in images]
    frames += frames[-2:0:-1]
    with atomic_path(folder / "sweep.gif") as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=120, loop=0)
    return f"{safe_name(name, 'attribute')} from {STRENGTHS[0]:+g} to {STRENGTHS[-1]:+g}"
