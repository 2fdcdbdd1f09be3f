"""``idinvert invert``: photos → W+ codes, with the output folder that the other verbs read."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, ImageError, NonFiniteError
from ..fileio import StagedOutput, check_output_dir
from ..images import expand_inputs, is_image_file, read_image, read_images, save_image, unique_names
from ..inversion import METHODS, InversionConfig, InversionResult, invert
from ..pack import ModelPack
from ..report import Report, environment, write_outputs
from .common import add_device, add_model, add_quiet, check_lr, info, open_pack, progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("invert", help="invert photos into W+ codes (in-domain inversion by default)",
                       description="Invert images, folders of images or list files. Writes codes.npy "
                                   "[N, L, C], encoder_codes.npy, <name>_{ori,enc,inv}.png, manifest.json, "
                                   "sheet.png and index.html into --out.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR_OR_LIST")
    add_model(p)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    add_inversion_options(p)
    p.add_argument("--batch-size", type=int, default=None,
                   help="images optimised together (default: 1 on CPU, where it is fastest per image; 8 on GPU)")
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
    return InversionConfig(method=args.method, steps=args.steps, lr=check_lr(args.lr), lambda_vgg=args.lambda_vgg,
                           lambda_dom=args.lambda_dom, init=args.init, early_stop=args.early_stop,
                           patience=args.patience)


def default_batch_size(pack: ModelPack) -> int:
    """1 on CPU (batching is slower per image there: benchmarks/results), 8 on a GPU."""
    return 8 if pack.device.type == "cuda" else 1


def run_inversion(args: argparse.Namespace, pack: ModelPack, images: torch.Tensor,
                  config: InversionConfig, batch_size: int) -> InversionResult:
    if batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    batches = (images.shape[0] + batch_size - 1) // batch_size
    steps = config.steps if config.optimises else 0
    with progress(args, batches * steps, f"{config.method} inversion") as bar:
        return invert(images, pack, config, batch_size=batch_size,
                      rng=torch.Generator().manual_seed(getattr(args, "seed", 0)),
                      callback=lambda b, s, losses: bar.update(1))


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out)
    config = inversion_config(args)
    paths = expand_inputs(args.inputs)
    pack = open_pack(args)
    images = read_images(paths, pack.resolution)
    result = run_inversion(args, pack, images, config, args.batch_size or default_batch_size(pack))
    with StagedOutput(args.out) as stage:
        write_inversion(stage.path, unique_names(paths), paths, images, result, pack)
    info(args, f"inverted {len(paths)} image(s) in {result.seconds:.1f} s → {args.out}/index.html")
    return 0


def write_inversion(folder: Path, names: list[str], sources: list[Path], images: torch.Tensor,
                    result: InversionResult, pack: ModelPack) -> None:
    """The invert output contract (codes, PNGs, manifest, sheet, HTML) into ``folder``."""
    np.save(folder / "codes.npy", result.codes.float().cpu().numpy())
    if result.encoder_codes is not None:
        np.save(folder / "encoder_codes.npy", result.encoder_codes.float().cpu().numpy())
    report = Report(title="Inversion", headers=["Original", "Encoder output", "Inversion"])
    for i, name in enumerate(names):
        save_image(images[i], folder / f"{name}_ori.png")
        enc = ""
        if result.encoder_reconstructions is not None:
            save_image(result.encoder_reconstructions[i], folder / f"{name}_enc.png")
            enc = f"{name}_enc.png"
        save_image(result.reconstructions[i], folder / f"{name}_inv.png")
        report.add_row(name, [f"{name}_ori.png", enc, f"{name}_inv.png"])
    n = len(names)
    manifest = {
        "verb": "invert", "names": names, "inputs": [str(p) for p in sources],
        "model": pack_identity(pack), "settings": asdict(result.config) if result.config else {},
        "code_shape": list(result.codes.shape), "losses": result.final_losses(),
        "steps_run": result.steps_run.tolist() if result.steps_run is not None else [],
        "seconds": round(result.seconds, 3), "seconds_per_image": round(result.seconds / max(n, 1), 3),
        "environment": environment(pack.device),
    }
    write_outputs(folder, report, manifest)


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


def read_invert_dir(folder: Path, pack: ModelPack) -> Inverted:
    manifest_path, codes_path = folder / "manifest.json", folder / "codes.npy"
    if not codes_path.is_file() or not manifest_path.is_file():
        raise ConfigError(f"{folder} is not an invert output folder (codes.npy or manifest.json missing); "
                          f"run `idinvert invert` first or pass image files")
    try:
        names = json.loads(manifest_path.read_text(encoding="utf-8"))["names"]
        codes = torch.from_numpy(np.load(codes_path, allow_pickle=False)).float()
    except (KeyError, ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{folder}: unreadable manifest.json or codes.npy ({exc}); "
                          f"run `idinvert invert` again") from None
    if codes.ndim != 3 or tuple(codes.shape[1:]) != pack.code_shape or codes.shape[0] != len(names):
        raise ConfigError(f"{codes_path} holds codes {list(codes.shape)}, but the model takes "
                          f"[{len(names)}, {pack.code_shape[0]}, {pack.code_shape[1]}]; invert with this model")
    if not torch.isfinite(codes).all():
        raise ConfigError(f"{codes_path} holds NaN or infinite codes; run `idinvert invert` again")
    originals = torch.stack([read_image(folder / f"{n}_ori.png", pack.resolution) for n in names])
    return Inverted(names, codes.to(pack.device), originals, str(folder))


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
