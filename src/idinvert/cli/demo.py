"""``idinvert demo``: the whole pipeline on a bundled public-domain portrait, in well under a minute.

Align the face (dlib), invert it (in-domain, 100 steps), apply every attribute edit of the pack at
two strengths in both directions, interpolate towards a second face (a sample of the generator),
paste every result back into the full photo, and write ``index.html`` and ``sheet.png``.

The default photo is scikit-image's ``astronaut`` (Eileen Collins, NASA: public domain).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..attributes import pack_boundaries
from ..editing import interpolate, load_boundary, manipulate, synthesize
from ..errors import ConfigError
from ..fileio import StagedOutput, check_output_dir
from ..images import save_image
from ..inversion import MAX_STEPS, InversionConfig
from ..report import Report, environment, write_outputs
from ..safety import check_int, check_seed, safe_name
from .common import add_device, add_model, add_quiet, info, open_pack
from .invert import default_batch_size, pack_identity, run_inversion
from .photos import align_photos, paste_faces

STRENGTHS = (-3.0, -1.5, 1.5, 3.0)


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


def bundled_portrait() -> "PIL.Image.Image":  # noqa: F821
    try:
        from skimage import data
    except ImportError:
        raise ConfigError("the bundled portrait comes from scikit-image: pip install scikit-image "
                          "(or pass --photo FILE)") from None
    from PIL import Image

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
        report = Report(title="idinvert demo", headers=[f"d = {d:+g}" for d in STRENGTHS])
        _write_inversion(folder, report, aligned, result)
        for name, relative in sorted(pack_boundaries(pack).items()):
            report.add_row(name, _edit_cells(folder, pack, aligned, codes, name, relative))
        report.add_row("interpolation to another face (t = 0, ⅓, ⅔, 1)",
                       _interpolation_cells(folder, pack, aligned, codes, args.seed))
        manifest = {"verb": "demo", "photo": str(args.photo or "scikit-image astronaut (public domain)"),
                    "faces": aligned.names, "model": pack_identity(pack), "steps": args.steps,
                    "strengths": list(STRENGTHS), "attributes": sorted(pack_boundaries(pack)),
                    "losses": result.final_losses(), "seconds": round(time.perf_counter() - began, 2),
                    "environment": environment(pack.device)}
        write_outputs(folder, report, manifest)
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
    report.add_row("photo · aligned face · inversion · pasted back",
                   ["photo.png" if (folder / "photo.png").exists() else "", f"{aligned.names[0]}_aligned.png",
                    f"{aligned.names[0]}_inv.png", "inversion_photo.png"])


def _edit_cells(folder: Path, pack, aligned, codes: torch.Tensor, name: str, relative: str) -> list[str]:
    boundary = load_boundary(pack.file(relative), pack.code_shape)
    name = safe_name(name, "attribute")  # a name from the pack's config.json becomes a file name
    edited = manipulate(codes, boundary, distances=torch.tensor(STRENGTHS))  # [F, 4, L, C]
    images = synthesize(pack.generator, edited).cpu()
    cells = []
    for k, d in enumerate(STRENGTHS):
        file = f"{name}_{d:+g}_photo.png"
        photo = next(iter(paste_faces(aligned, images[:, k]).values()))
        save_image(photo, folder / file)
        save_image(images[0, k], folder / f"{name}_{d:+g}_face.png")
        cells.append(file)
    return cells


def _interpolation_cells(folder: Path, pack, aligned, codes: torch.Tensor, seed: int) -> list[str]:
    g = pack.generator
    z = torch.randn(1, g.z_dim, generator=torch.Generator().manual_seed(seed)).to(pack.device)
    with torch.no_grad():
        other = g.sample_codes(z)  # a generated face (truncation ψ = 0.7)
    path = interpolate(codes[:1], other, steps=len(STRENGTHS) - 2)[0, 0]  # [4, L, C]
    images = synthesize(g, path).cpu()
    cells = []
    for k in range(len(STRENGTHS)):
        file = f"interpolation_{k}_photo.png"
        save_image(next(iter(paste_faces(aligned, images[k:k + 1].expand(len(aligned.names), -1, -1, -1)).values())),
                   folder / file)
        cells.append(file)
    return cells
