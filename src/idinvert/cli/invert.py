"""``idinvert invert``: photos → W+ codes, with the output folder that the other verbs read."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import ConfigError, ImageError, NonFiniteError
from ..engine.inversion import MAX_STEPS, MAX_WEIGHT
from ..safety import check_float, check_int, check_names, check_seed, load_npy, npy_header, read_json
from ..fileio import check_output_dir
from ..images import expand_inputs, is_image_file, read_image, read_images, unique_names
from ..engine.inversion import METHODS, InversionConfig, InversionResult, invert
from ..engine.dataset_inversion import DatasetJob, invert_dataset, resolve_lambda_vgg
from ..pack import ModelPack, load_pack
from ..training.common import Distributed, init_distributed
from ..engine.tuned import TunedWeights
from .refining import REFINE_BATCH, add_refine_options, folder_tuning, refine_config_of, refine_invert_dir
from .common import (MAX_BATCH, add_device, add_model, add_quiet, batch_size_of, check_lr, default_batch_size,
                     device_of, info, progress)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("invert", help="invert photos into W+ codes (in-domain inversion by default)",
                       description="Invert images, folders of images or list files. Writes codes.npy "
                                   "[N, L, C], encoder_codes.npy, <name>_{ori,enc,inv}.png, manifest.json, "
                                   "sheet.png and index.html into --out. Images are decoded ahead and inverted "
                                   "batch by batch; finished batches are kept in .<out>.partial beside --out, so "
                                   "an interrupted run continues where it stopped. Under torchrun the images "
                                   "are split over the processes.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR_OR_LIST")
    add_model(p)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    add_inversion_options(p)
    add_refine_options(p)
    p.add_argument("--batch-size", type=int, default=None,
                   help="images optimised together (default: on a CPU 16 for packs of 64 px or less and 1 for "
                        "larger ones, whichever is fastest per image there; 8 on a GPU)")
    p.add_argument("--no-images", action="store_true",
                   help="write only codes.npy, encoder_codes.npy and manifest.json (for large data sets)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run into the same --out (rerunning the same command does too); "
                        "refused if the settings differ")
    add_device(p)
    add_quiet(p)
    p.set_defaults(run=run)


def add_inversion_options(p: argparse.ArgumentParser) -> None:
    d = InversionConfig()
    p.add_argument("--method", choices=METHODS, default=d.method,
                   help="in-domain (Eq. 4), encoder (E only), mse (MSE-based baseline), conventional "
                        "(the Eq. 1 encoder, when the pack has one)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimisation steps (default {d.steps})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--lambda-vgg", type=float, default=None, help="λ_vgg (default: the pack's calibrated value)")
    p.add_argument("--lambda-dom", type=float, default=d.lambda_dom, help=f"λ_dom (default {d.lambda_dom})")
    p.add_argument("--init", choices=("encoder", "random", "mean"), default=None,
                   help="starting code (default: encoder; random N(0,1) for --method mse)")
    p.add_argument("--early-stop", type=float, default=None, metavar="REL",
                   help="stop an image when its loss changes by less than REL over --patience steps")
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--seed", type=int, default=0, help="seed of random initialisation (default 0)")


def inversion_config(args: argparse.Namespace) -> InversionConfig:
    """The inversion options, each checked (finite, in range) with a message naming it."""
    check_int(args.steps, "--steps", 0, MAX_STEPS)
    check_int(args.patience, "--patience", 1, MAX_STEPS)
    check_seed(getattr(args, "seed", 0))
    for option, value in (("--lambda-vgg", args.lambda_vgg), ("--lambda-dom", args.lambda_dom)):
        if value is not None:
            check_float(value, option, 0.0, MAX_WEIGHT, hint="a loss weight")
    if args.early_stop is not None:
        check_float(args.early_stop, "--early-stop", 0.0, 1.0, hint="a relative change of the loss")
    return InversionConfig(method=args.method, steps=args.steps, lr=check_lr(args.lr), lambda_vgg=args.lambda_vgg,
                           lambda_dom=args.lambda_dom, init=args.init, early_stop=args.early_stop,
                           patience=args.patience)


def run_inversion(args: argparse.Namespace, pack: ModelPack, images: torch.Tensor,
                  config: InversionConfig, batch_size: int) -> InversionResult:
    check_int(batch_size, "--batch-size", 1, MAX_BATCH)
    batches = (images.shape[0] + batch_size - 1) // batch_size
    steps = config.steps if config.optimises else 0
    with progress(args, batches * steps, f"{config.method} inversion") as bar:
        return invert(images, pack, config, batch_size=batch_size,
                      rng=torch.Generator().manual_seed(check_seed(getattr(args, "seed", 0))),
                      callback=lambda b, s, losses: bar.update(1))


def run(args: argparse.Namespace) -> int:
    config = inversion_config(args)
    refining = refine_config_of(args)
    paths = expand_inputs(args.inputs)
    check_output_dir(args.out, inputs=[*args.inputs, *paths, args.model])
    world = init_distributed(device_of(args))  # one process, or this process's share under torchrun
    pack = load_pack(args.model, device=world.device)
    job = DatasetJob(sources=paths, names=unique_names(paths), out=args.out, config=resolve_lambda_vgg(config, pack),
                     seed=args.seed, batch_size=batch_size_of(args, pack), images=not args.no_images,
                     resume=args.resume)
    say = (lambda message: info(args, message)) if world.is_main else (lambda message: None)
    outcome = invert_dataset(pack, job, model=pack_identity(pack), world=world, log=say,
                             progress=lambda done, total: dataset_progress(args, done, total, world))
    if outcome.stopped:
        say(f"stopped after the current batch; the finished images are kept in {job.work}: run the same "
            f"command again to continue")
        return 130
    if outcome.inverted or world.world_size > 1:
        say(f"inverted {outcome.total} image(s) ({outcome.inverted} in this run, {outcome.seconds:.1f} s"
            f"{f', {world.world_size} processes' if world.world_size > 1 else ''}) → {args.out}/"
            f"{'index.html' if job.images else 'codes.npy'}")
    if refining is not None and world.is_main:  # on the finished folder: its codes are the pivots
        refine_invert_dir(args, args.out, pack, refining, args.batch_size or REFINE_BATCH)
    return 0


def dataset_progress(args: argparse.Namespace, done: int, total: int, world: Distributed) -> tqdm:
    """Images done / total, images per second and the time left (the first process's bar; under
    torchrun it counts its own images times the number of processes)."""
    return tqdm(total=total, initial=done, unit="img", desc="inverting", file=sys.stderr, dynamic_ncols=True,
                disable=getattr(args, "quiet", False) or not world.is_main, mininterval=0.5, delay=1.0,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} images "
                           "[{elapsed}<{remaining}, {rate_fmt}]")


def pack_identity(pack: ModelPack) -> dict:
    return {"name": pack.name, "path": str(pack.path) if pack.path else None,
            "resolution": pack.resolution, "code_shape": list(pack.code_shape)}


@dataclass
class Inverted:
    """Codes and originals from an invert folder (or photos inverted on the spot)."""

    names: list[str]
    codes: torch.Tensor  # [N, L, C]
    originals: torch.Tensor  # [N, 3, R, R]
    source: str
    tuned: TunedWeights | None = None  # each image's tuned generator (invert --refine), else None


def read_invert_dir(folder: Path, pack: ModelPack) -> Inverted:
    manifest, names, codes = read_invert_codes(folder, pack)
    originals = torch.stack([read_image(p, pack.resolution) for p in invert_dir_originals(folder, manifest, names)])
    return Inverted(names, codes.to(pack.device), originals, str(folder), folder_tuning(folder, manifest, pack))


def read_invert_codes(folder: Path, pack: ModelPack) -> tuple[dict, list[str], torch.Tensor]:
    """An invert folder's manifest, names and codes ``[N, L, C]`` (on the CPU), checked against the pack."""
    manifest_path, codes_path = folder / "manifest.json", folder / "codes.npy"
    if not codes_path.is_file() or not manifest_path.is_file():
        raise ConfigError(f"{folder} is not an invert output folder (codes.npy or manifest.json missing); "
                          f"run `idinvert invert` first or pass image files")
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict) or "names" not in manifest:
        raise ConfigError(f"{manifest_path} has no 'names'; run `idinvert invert` again")
    shape, _, _ = npy_header(codes_path)  # checked before the codes are read
    if len(shape) != 3 or tuple(shape[1:]) != pack.code_shape:
        raise ConfigError(f"{codes_path} holds codes {list(shape)}, but the model takes "
                          f"[N, {pack.code_shape[0]}, {pack.code_shape[1]}]; invert with this model")
    names = check_names(manifest["names"], str(manifest_path), count=shape[0])
    codes = torch.from_numpy(load_npy(codes_path)).float()
    if not torch.isfinite(codes).all():
        raise ConfigError(f"{codes_path} holds NaN or infinite codes; run `idinvert invert` again")
    return manifest, names, codes


def is_invert_dir(folder: Path) -> bool:
    return folder.is_dir() and (folder / "codes.npy").is_file() and (folder / "manifest.json").is_file()


def invert_dir_images(folder: Path) -> tuple[list[Path], list[str]]:
    """An invert folder's original images, in its order, and their input file names (the names a
    labels CSV uses), for verbs that measure the photos themselves (``evaluate``)."""
    manifest = read_json(folder / "manifest.json")
    if not isinstance(manifest, dict):
        raise ConfigError(f"{folder / 'manifest.json'} is not an invert manifest; run `idinvert invert` again")
    names = check_names(manifest.get("names"), str(folder / "manifest.json"))
    inputs = manifest.get("inputs")
    files = [Path(inputs[i]).name if isinstance(inputs, list) and len(inputs) == len(names)
             and isinstance(inputs[i], str) else f"{name}.png" for i, name in enumerate(names)]
    return invert_dir_originals(folder, manifest, names), files


def invert_dir_originals(folder: Path, manifest: dict, names: list[str]) -> list[Path]:
    """The original image of each name: ``<name>_ori.png``, or the input file for a folder written
    with --no-images (as given, else its resolved path from the manifest's keys)."""
    inputs, keys = manifest.get("inputs"), manifest.get("keys")
    paths = []
    for i, name in enumerate(names):
        candidates = [folder / f"{name}_ori.png"]
        if isinstance(inputs, list) and len(inputs) == len(names) and isinstance(inputs[i], str):
            candidates.append(Path(inputs[i]))
        if isinstance(keys, list) and len(keys) == len(names) and isinstance(keys[i], str):
            candidates.append(Path(keys[i].split("\t")[0]))
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ImageError(f"{folder} has no {name}_ori.png (inverted with --no-images?) and its input image "
                             f"{candidates[-1]} is gone; restore it or invert again without --no-images")
        paths.append(found)
    return paths


def codes_from_inputs(args: argparse.Namespace, pack: ModelPack, inputs: list[str]) -> Inverted:
    """An invert folder, or image files/folders/lists inverted now with the default settings."""
    if len(inputs) == 1 and Path(inputs[0]).is_dir() and (Path(inputs[0]) / "codes.npy").exists():
        return read_invert_dir(Path(inputs[0]), pack)
    paths = expand_inputs(inputs)
    bad = [p for p in paths if not is_image_file(p)]
    if bad:
        raise ImageError(f"{bad[0]}: expected an invert output folder or image files")
    images = read_images(paths, pack.resolution)
    try:
        result = run_inversion(args, pack, images, InversionConfig(), batch_size=default_batch_size(pack))
    except NonFiniteError:
        raise NonFiniteError(f"inverting {', '.join(map(str, inputs))} with the default settings gave a NaN/inf "
                             f"loss; check or rebuild the model pack {pack.path}, or run `idinvert invert` with "
                             f"a lower --lr and pass its folder") from None
    return Inverted(unique_names(paths), result.codes, images, ", ".join(map(str, inputs)))
