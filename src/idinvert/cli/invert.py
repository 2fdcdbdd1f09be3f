"""``idinvert invert``: photos → W+ codes, with the output folder that the other verbs read."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ..engine.dataset_inversion import DatasetJob, invert_dataset, resolve_lambda_vgg
from ..engine.inversion import MAX_STEPS, MAX_WEIGHT, METHODS, InversionConfig
from ..engine.invert_folder import tune_folder
from ..fileio import check_output_dir
from ..images import expand_inputs, unique_names
from ..pack import load_pack
from ..parallel import Distributed, init_distributed
from ..safety import check_float, check_int, check_seed
from .common import add_device, add_model, add_quiet, batch_size_of, check_lr, device_of, info
from .refining import REFINE_BATCH, add_refine_options, refine_config_of, run_refinement


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


def run(args: argparse.Namespace) -> int:
    config = inversion_config(args)
    refine_config_of(args)  # --refine-steps checked before any work
    paths = expand_inputs(args.inputs)
    check_output_dir(args.out, inputs=[*args.inputs, *paths, args.model])
    world = init_distributed(device_of(args))  # one process, or this process's share under torchrun
    pack = load_pack(args.model, device=world.device)
    refining = refine_config_of(args, pack)
    job = DatasetJob(sources=paths, names=unique_names(paths), out=args.out, config=resolve_lambda_vgg(config, pack),
                     seed=args.seed, batch_size=batch_size_of(args, pack), images=not args.no_images,
                     resume=args.resume)
    say = (lambda message: info(args, message)) if world.is_main else (lambda message: None)
    outcome = invert_dataset(pack, job, model=pack.identity(), world=world, log=say,
                             progress=lambda done, total: dataset_progress(args, done, total, world))
    if outcome.stopped:
        say(f"stopped after the current batch; the finished images are kept in {job.work}: run the same "
            f"command again to continue")
        return outcome.exit_status  # 130 after Ctrl-C, 143 after SIGTERM (as every verb)
    if outcome.inverted or world.world_size > 1:
        say(f"inverted {outcome.total} image(s) ({outcome.inverted} in this run, {outcome.seconds:.1f} s"
            f"{f', {world.world_size} processes' if world.world_size > 1 else ''}) → {args.out}/"
            f"{'index.html' if job.images else 'codes.npy'}")
    if refining is not None and world.is_main:  # on the finished folder: its codes are the pivots
        batch = args.batch_size or REFINE_BATCH
        tuned = tune_folder(args.out, pack, refining, batch_size=batch,
                            tune=lambda images, codes: run_refinement(args, pack, images, codes, refining, batch))
        if tuned is None:
            info(args, f"{args.out}: the generators are already tuned with these settings")
    return 0


def dataset_progress(args: argparse.Namespace, done: int, total: int, world: Distributed) -> tqdm:
    """Images done / total, images per second and the time left (the first process's bar; under
    torchrun it counts its own images times the number of processes)."""
    return tqdm(total=total, initial=done, unit="img", desc="inverting", file=sys.stderr, dynamic_ncols=True,
                disable=getattr(args, "quiet", False) or not world.is_main, mininterval=0.5, delay=1.0,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} images "
                           "[{elapsed}<{remaining}, {rate_fmt}]")
