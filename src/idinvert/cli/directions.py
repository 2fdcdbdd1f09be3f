"""``idinvert directions``: edit directions without labels (SeFa, GANSpace), with previews and an index page."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch

from ..boundaries import parse_layers, save_boundary
from ..engine.directions import DEFAULT_SAMPLES, METHODS, Directions, find_directions
from ..engine.editing import DEFAULT_DISTANCES, manipulate
from ..engine.tuned import synthesize
from ..errors import ConfigError, NonFiniteError
from ..evaluation.plots import labelled_grid
from ..fileio import StagedOutput, check_output_dir
from ..images import save_image
from ..pack import ModelPack, bundled_pack_dir, update_pack
from ..report import Report, environment, write_outputs
from ..safety import check_int, check_seed
from .common import add_device, add_model, add_quiet, info, open_pack, parse_pair, progress

PACK_FOLDER = "directions"  # where --add-to-pack puts the files inside the pack
MAX_NUM = 512  # directions per run (each writes a grid)
MAX_SAMPLES = 1_000_000  # GANSpace's paper sampled 10^6 codes
MAX_PREVIEW, MAX_STEPS = 16, 64  # preview samples and distances
MAX_DISTANCE = 100.0  # |d| of a preview edit


def register(sub: argparse._SubParsersAction) -> None:
    start, end, steps = DEFAULT_DISTANCES
    p = sub.add_parser("directions", help="find edit directions without labels (SeFa, GANSpace)",
                       description="Find K directions in the pack's code space without any labels: SeFa "
                                   "(eigenvectors of AᵀA, A = the weights that read the code in the chosen "
                                   "layers; closed form) or GANSpace (principal components of codes sampled "
                                   "from the prior). Writes direction_KK.npy (the official boundary format, "
                                   "with its layers), direction_KK.png (prior samples moved from START to END), "
                                   "manifest.json, sheet.png and index.html into --out.")
    p._negative_number_matcher = re.compile(r"^-\.?\d")  # allow --distances -3,3
    p.add_argument("--method", required=True, choices=METHODS, help="sefa (closed form) or ganspace (PCA)")
    add_model(p)
    p.add_argument("--layers", default=None, metavar="SPEC",
                   help="layers to factorise and move, like '0-3' or '2,3,4' (default: all; "
                        "only for layer-wise W+ generators)")
    p.add_argument("--num", type=int, default=10, metavar="K", help="directions to keep (default 10)")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, metavar="N",
                   help=f"prior samples of the GANSpace PCA (default {DEFAULT_SAMPLES})")
    p.add_argument("--seed", type=int, default=0, help="seed of the PCA samples and the preview samples (default 0)")
    p.add_argument("--preview", type=int, default=3, metavar="M", help="prior samples in each preview (default 3)")
    p.add_argument("--distances", default=f"{start:g},{end:g}", metavar="START,END",
                   help=f"preview distances from START to END (default {start:g},{end:g})")
    p.add_argument("--steps", type=int, default=steps, help=f"preview distances (default {steps})")
    p.add_argument("--add-to-pack", action="store_true",
                   help="also copy the directions into the pack and list them in its config.json under "
                        "'directions' (the editor shows them as sliders)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    add_device(p)
    add_quiet(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    start, end = parse_pair(args.distances, "--distances", limit=MAX_DISTANCE)
    check_int(args.steps, "--steps", 2, MAX_STEPS, hint="preview distances")
    check_int(args.preview, "--preview", 1, MAX_PREVIEW, hint="prior samples per preview")
    check_int(args.num, "--num", 1, MAX_NUM, hint="directions to keep")
    check_int(args.samples, "--samples", 2, MAX_SAMPLES, hint="prior samples of the PCA")
    check_seed(args.seed)
    check_output_dir(args.out, inputs=[args.model])
    pack = open_pack(args)
    if args.add_to_pack and pack.path is not None and bundled_pack_dir(pack.path.name).resolve() == pack.path.resolve():
        raise ConfigError(f"--add-to-pack changes the pack, and {pack.name!r} is the one installed with idinvert; "
                          f"copy its folder ({pack.path}) and pass the copy as --model")
    if args.layers is not None:
        pack.generator.require_layerwise("--layers")
    try:
        layers = parse_layers(args.layers, pack.code_shape[0])
    except ConfigError as exc:
        raise ConfigError(f"--{exc}") from None
    began = time.perf_counter()
    options = {"layers": layers if args.layers is not None else None, "num": args.num}
    if args.method == "ganspace":
        options.update(samples=args.samples, seed=args.seed)
    found = find_directions(pack.generator, args.method, **options)
    seconds = time.perf_counter() - began
    distances = torch.linspace(start, end, args.steps)
    z = torch.randn(args.preview, pack.generator.z_dim, generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        samples = pack.generator.sample_codes(z.to(pack.device)).float()  # [M, L, C], the pack's truncation
    edited = torch.stack([manipulate(samples, found.boundary(k), distances=distances)
                          for k in range(len(found))])  # [K, M, D, L, C]
    with progress(args, edited.shape[0] * edited.shape[1] * edited.shape[2], "previews") as bar:
        images = synthesize(pack.generator, edited, callback=bar.update).cpu()  # [K, M, D, 3, R, R]
    if not torch.isfinite(images).all():
        raise NonFiniteError(f"the model pack {pack.path} synthesises NaN/inf images; check or rebuild the pack")
    with StagedOutput(args.out, inputs=[args.model]) as stage:
        entries = write_directions(stage.path, found, images, distances, pack)
        manifest = {
            "verb": "directions", "method": args.method, "model": pack.identity(),
            "generator_kind": pack.generator.kind, "layers": layers, "num": len(found),
            "samples": args.samples if args.method == "ganspace" else None, "seed": args.seed,
            "preview": {"samples": args.preview, "distances": distances.tolist()},
            "directions": entries, "seconds": round(seconds, 3), "environment": environment(pack.device),
        }
        write_outputs(stage.path, index_report(found, entries, distances), manifest)
    if args.add_to_pack:
        add_to_pack(pack, args.out, entries, args.method)
        info(args, f"listed {len(found)} {args.method} directions in {pack.path}/config.json")
    info(args, f"{len(found)} {args.method} directions ({seconds:.2f} s) → {args.out}/index.html")
    return 0


def write_directions(folder: Path, found: Directions, images: torch.Tensor, distances: torch.Tensor,
                     pack: ModelPack) -> list[dict]:
    """Each direction's boundary file, preview grid and first-sample tiles; returns their manifest entries."""
    header = [f"d = {d:g}" for d in distances.tolist()]
    entries = []
    for k in range(len(found)):
        stem = f"direction_{k + 1:02d}"
        b = found.boundary(k)
        meta = {"method": found.method, "index": k + 1, "value": float(found.values[k]),
                "prior_std": float(found.scales[k]), "pack": pack.name}
        save_boundary(folder / f"{stem}.npy", b.direction[None], layers=list(found.layers),
                      meta={key: v for key, v in meta.items() if v == v})  # NaN (not measured) left out
        grid = labelled_grid([(f"sample {m + 1}", list(images[k, m])) for m in range(images.shape[1])],
                             header=header, label_width=80)
        save_image(grid, folder / f"{stem}.png")
        for s in range(images.shape[2]):
            save_image(images[k, 0, s], folder / "tiles" / f"{stem}_step{s + 1:02d}.png")
        entries.append({"name": stem, "file": f"{stem}.npy", "preview": f"{stem}.png", "layers": list(found.layers),
                        **{key: v for key, v in meta.items() if key not in ("method", "pack")}})
    return entries


def index_report(found: Directions, entries: list[dict], distances: torch.Tensor) -> Report:
    """One row per direction: its layers, strength and the first sample moved along it (every sample:
    the direction's own grid)."""
    value = "eigenvalue" if found.method == "sefa" else "variance"
    headers = ["Layers", value] + [f"d = {d:g}" for d in distances.tolist()]
    report = Report(title=f"{found.method} directions", headers=headers)
    for k, entry in enumerate(entries):
        tiles = [f"tiles/{entry['name']}_step{s + 1:02d}.png" for s in range(len(distances))]
        report.add_row(f"direction {k + 1} ({entry['preview']})", [_layer_text(entry["layers"]),
                                                                   f"{entry['value']:.4g}", *tiles])
    return report


def _layer_text(layers: list[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"0-2,5"``."""
    runs: list[list[int]] = []
    for v in layers:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def add_to_pack(pack: ModelPack, out: Path, entries: list[dict], method: str) -> None:
    """Copy the boundary files into ``PACK/directions/`` and list them under ``"directions"``: name →
    {file, layers, method}. Entries of the same names are replaced; other directions stay."""
    files, listed = {}, {}
    for entry in entries:
        name = f"{method}_{entry['index']:02d}"
        relative = f"{PACK_FOLDER}/{name}.npy"
        files[relative] = out / entry["file"]
        listed[name] = {"file": relative, "layers": entry["layers"], "method": method}
    update_pack(pack.path, files=files, config_updates={"directions": listed})
