"""Training verbs: ``prepare-data``, ``train-gan``, ``train-encoder``, ``train-conventional``, ``export``.

Every training verb runs in a run folder (``--run-dir``), checkpoints atomically, continues exactly
with ``--resume``, stops cleanly on Ctrl-C (checkpoint first), and at the end writes a model
pack into ``RUN_DIR/pack``. Under ``torchrun --nproc_per_node=K`` the verbs train data-parallel.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..align import check_alignment_available, ffhq_framing, framing_from_config, utkface_framing
from ..datasets import ImageDataset, prepare_dataset
from ..errors import CheckpointError, ConfigError
from ..fileio import check_output_dir
from ..networks import StyleGAN2Config
from ..networks.config import DiscriminatorConfig, EncoderConfig, GeneratorConfig
from ..pack import check_pack_target, load_pack
from ..parallel import init_distributed
from ..safety import read_json
from ..training.distill import STUDENT_ARCHS, DistillConfig, student_config
from ..training.drivers import export_run, run_distill, run_encoder, run_gan
from ..training.encoder import EncoderTrainConfig
from ..training.gan import GANTrainConfig
from ..training.gan2 import GAN2TrainConfig, run_gan2
from ..training.runner import RunOptions
from .common import add_device, add_quiet, info, progress

PRESETS = {
    # The default face pack: small enough to train on a 2-core CPU with progressive growing.
    "small64": dict(resolution=64, z_dim=256, w_dim=256, mapping_fmaps=256, fmaps_base=2048, fmaps_max=128),
    # The official styleganinv_*256 configuration.
    "official256": dict(resolution=256),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare-data", help="decode images once into a training cache",
                       description="Image folder, tar file or list file → images.npy + index.json at one "
                                   "resolution (centre crop, Lanczos). Corrupt files are reported and skipped.")
    p.add_argument("source", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--resolution", type=int, required=True)
    p.add_argument("--labels", type=Path, help="CSV with a 'file' column (and e.g. 'split')")
    p.add_argument("--split", help="keep only rows whose 'split' column has this value (e.g. train)")
    p.add_argument("--limit", type=int, help="keep at most this many images")
    p.add_argument("--align", metavar="FRAMING", help="align the largest face of each photo instead of "
                                                      "centre-cropping: utkface, ffhq, or a pack folder's framing")
    add_quiet(p)
    p.set_defaults(run=run_prepare)

    p = sub.add_parser("train-gan", help="train a StyleGAN with the per-layer W+ mapping, or a StyleGAN2")
    p.add_argument("--data", required=True, type=Path, help="a folder made by prepare-data")
    p.add_argument("--arch", choices=("stylegan", "stylegan2"), default="stylegan",
                   help="stylegan: IDInvert's StyleGAN with progressive growing (default); stylegan2: config F "
                        "(lazy R1, path-length regularisation, no growing; --batch-low and --lod-* do not apply)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small64",
                   help="network size; with --arch stylegan2, official256 is config F at 256 px")
    p.add_argument("--resolution", type=int, help="override the preset's resolution")
    p.add_argument("--w-dim", type=int)
    p.add_argument("--fmaps-base", type=int)
    p.add_argument("--fmaps-max", type=int)
    p.add_argument("--mapping-layers", type=int)
    d = GANTrainConfig()
    p.add_argument("--kimg", type=float, default=1500.0, help="thousands of images to show (default 1500)")
    p.add_argument("--batch", type=int, default=32, help="global minibatch (default 32)")
    p.add_argument("--batch-low", type=int, default=64, help="minibatch at resolutions ≤ 16 (default 64)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--gamma", type=float, default=d.r1_gamma, help="R1 γ (default 10)")
    p.add_argument("--r1-interval", type=int, default=None,
                   help="lazy R1 every N steps (1 = every step; default 4, stylegan2 16)")
    p.add_argument("--pl-weight", type=float, default=GAN2TrainConfig().pl_weight,
                   help="stylegan2: path-length regularisation weight, every 4 steps (0 = off; default 2)")
    p.add_argument("--lod-initial", type=int, default=8, help="progressive growing starts here (default 8)")
    p.add_argument("--lod-kimg", type=float, default=150.0, help="kimg per resolution and per fade-in")
    p.add_argument("--no-mirror", action="store_true")
    _add_run_options(p)
    p.set_defaults(run=run_train_gan)

    for kind in ("encoder", "conventional"):
        p = sub.add_parser(f"train-{kind}",
                           help="train the domain-guided encoder on real images" if kind == "encoder" else
                           "train the conventional (Eq. 1) encoder baseline on generated codes")
        p.add_argument("--pack", required=True, type=Path,
                       help="pack with the generator" + (" and discriminator (from train-gan)" if kind == "encoder" else ""))
        if kind == "encoder":
            p.add_argument("--data", required=True, type=Path, nargs="+",
                           help="a folder made by prepare-data (several are read as one)")
        e = EncoderTrainConfig()
        p.add_argument("--kimg", type=float, default=200.0, help="thousands of images (default 200)")
        p.add_argument("--batch", type=int, default=16, help="global minibatch (default 16)")
        p.add_argument("--lr", type=float, default=e.lr)
        p.add_argument("--channels-base", type=int, default=None, help="default: 64 (32 below 256 px)")
        p.add_argument("--channels-max", type=int, default=None, help="default: 1024 (256 below 256 px)")
        if kind == "encoder":
            p.add_argument("--lambda-adv", type=float, default=e.lambda_adv, help="λ_adv (default 0.1, the paper's)")
            p.add_argument("--lambda-vgg", type=float, default=None, help="λ_vgg (default: the pack's)")
            p.add_argument("--gamma", type=float, default=e.r1_gamma)
            p.add_argument("--warm-start", nargs="?", const="conventional", choices=("conventional", "encoder"),
                           help="start from the pack's conventional encoder (short budgets; not the paper's "
                                "recipe), or with 'encoder' continue the pack's domain-guided encoder")
        p.set_defaults(run=run_train_encoder, kind="domain-guided" if kind == "encoder" else "conventional")
        _add_run_options(p)

    register_distill(sub)
    p = sub.add_parser("export", help="write a model pack from a training run's latest checkpoint")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--name")
    add_quiet(p)
    p.set_defaults(run=run_export)


def register_distill(sub: argparse._SubParsersAction) -> None:
    d = DistillConfig()
    s = d.student
    p = sub.add_parser("distill", help="distil a pack's generator into a StyleGAN (or StyleGAN2) with W+ codes",
                       description="Train a StyleGAN or StyleGAN2 student to reproduce a teacher pack's generator "
                                   "on the teacher's own z ~ N(0, I) (pixel L1 + LPIPS-alex + a style-mixing term), "
                                   "optionally followed by a short adversarial phase on real photos.")
    p.add_argument("--teacher", required=True, help="the pack whose generator is distilled (e.g. dcgan-faces64)")
    p.add_argument("--data", type=Path, help="real photos in the teacher's framing (needed with --adv-kimg)")
    p.add_argument("--kimg", type=float, default=d.total_kimg, help=f"regression images, thousands (default {d.total_kimg:g})")
    p.add_argument("--adv-kimg", type=float, default=0.0, help="adversarial fine-tuning images after it (default 0)")
    p.add_argument("--arch", choices=STUDENT_ARCHS, default=None,
                   help=f"the student: stylegan (AdaIN) or stylegan2 (weight demodulation, no StyleGAN1 droplet "
                        f"artifact); default {d.arch}, or with --resume the run's own")
    p.add_argument("--batch", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--w-dim", type=int, default=s.w_dim, help="C of the student's W+ rows (and its mapping width)")
    p.add_argument("--mapping-layers", type=int, default=s.mapping_layers)
    p.add_argument("--mapping-lr-mul", type=float, default=s.mapping_lr_mul)
    p.add_argument("--fmaps-base", type=int, default=s.fmaps_base, help="channels at r px: min(base // r, max)")
    p.add_argument("--fmaps-max", type=int, help="default 256 for stylegan, 128 for stylegan2 (about the same cost)")
    p.add_argument("--lambda-lpips", type=float, default=d.lambda_lpips)
    p.add_argument("--lambda-mix", type=float, default=d.lambda_mix)
    p.add_argument("--mixing-prob", type=float, default=d.mixing_prob)
    p.add_argument("--lambda-adv", type=float, default=d.lambda_adv)
    p.add_argument("--ema-kimg", type=float, default=d.ema_kimg, help="half-life of the student's EMA, kimg")
    _add_run_options(p)
    p.set_defaults(run=run_distill_verb)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True, type=Path,
                   help="run folder (checkpoints, samples, final pack)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run exactly")
    p.add_argument("--max-minutes", type=float, help="stop with a checkpoint after this much time (resumable chunks)")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--snapshot-kimg", type=float, default=25.0, help="sample grid + checkpoint interval")
    p.add_argument("--name", help="name of the final pack")
    p.add_argument("--seed", type=int, default=None)
    add_device(p)
    add_quiet(p)


def _options(args: argparse.Namespace, total_kimg: float) -> RunOptions:
    return RunOptions(run_dir=args.run_dir, total_images=int(total_kimg * 1000), resume=args.resume,
                      checkpoint_minutes=args.checkpoint_minutes,
                      snapshot_images=max(1, int(args.snapshot_kimg * 1000)), max_minutes=args.max_minutes,
                      quiet=args.quiet)


def _report(args: argparse.Namespace, outcome, what: str) -> int:
    if outcome.finished:
        info(args, f"{what} finished after {outcome.images_seen} images ({outcome.seconds / 60:.1f} min); "
                   f"pack: {args.run_dir / 'pack'}")
        return 0
    info(args, f"{what} stopped at {outcome.images_seen} images with a checkpoint; continue with --resume")
    return outcome.exit_status  # 130 after Ctrl-C, 143 after SIGTERM (as every verb), 0 after --max-minutes


def run_prepare(args: argparse.Namespace) -> int:
    prepared = (args.out / "index.json").is_file() and (args.out / "images.npy").is_file()
    if not prepared:  # a finished cache is reused; otherwise the output-folder rules apply
        check_output_dir(args.out, inputs=[args.source, args.labels])
    framing = None
    if args.align:
        check_alignment_available()
        presets = {"utkface": utkface_framing, "ffhq": ffhq_framing}
        if args.align in presets:
            framing = presets[args.align](args.resolution)
        else:
            framing = framing_from_config(load_pack(args.align).config)
            if framing is None:
                raise ConfigError(f"pack {args.align} stores no framing; use --align utkface or ffhq")
    with progress(args, 0, "preparing") as bar:
        prepare_dataset(args.source, args.out, resolution=args.resolution, labels=args.labels, split=args.split,
                        limit=args.limit, framing=framing, progress=lambda n: bar.update(1))
    ds = ImageDataset(args.out)
    info(args, f"prepared {len(ds)} images at {ds.resolution}px in {args.out} "
               f"({len(ds.index['skipped'])} unreadable skipped)")
    return 0


def run_train_gan(args: argparse.Namespace) -> int:
    if args.arch == "stylegan2":
        return run_train_gan2(args)
    g_kwargs = dict(PRESETS[args.preset])
    for key in ("resolution", "w_dim", "fmaps_base", "fmaps_max", "mapping_layers"):
        if getattr(args, key) is not None:
            g_kwargs[key] = getattr(args, key)
    if args.w_dim is not None:  # z, w and the mapping's hidden width move together
        g_kwargs["z_dim"] = g_kwargs["mapping_fmaps"] = args.w_dim
    generator = GeneratorConfig(**g_kwargs)
    discriminator = DiscriminatorConfig(resolution=generator.resolution, fmaps_base=generator.fmaps_base,
                                        fmaps_max=generator.fmaps_max)
    low = tuple((r, args.batch_low) for r in (8, 16) if r < generator.resolution)
    config = GANTrainConfig(generator=generator, discriminator=discriminator, total_kimg=args.kimg,
                            batch_size=args.batch, minibatch_by_resolution=low, lr=args.lr, r1_gamma=args.gamma,
                            r1_interval=args.r1_interval or 4, lod_initial_resolution=min(args.lod_initial, generator.resolution),
                            lod_training_kimg=args.lod_kimg, lod_transition_kimg=args.lod_kimg,
                            mirror=not args.no_mirror, seed=args.seed if args.seed is not None else 0)
    world = init_distributed(args.device)
    outcome = run_gan(config, args.data, _options(args, args.kimg), world=world, name=args.name or "gan")
    return _report(args, outcome, "GAN training")


def stylegan2_network(args: argparse.Namespace) -> StyleGAN2Config:
    """The StyleGAN2 of ``--preset`` (official256: config F; small64: the v1 preset's widths), with overrides."""
    preset = {"small64": PRESETS["small64"], "official256": dict(resolution=256, fmaps_base=32768, fmaps_max=512)}
    kwargs = dict(preset[args.preset])
    names = {"fmaps_base": "channel_base", "fmaps_max": "channel_max"}
    for key in ("resolution", "w_dim", "fmaps_base", "fmaps_max", "mapping_layers"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    if args.w_dim is not None:
        kwargs["z_dim"] = args.w_dim
    kwargs.pop("mapping_fmaps", None)  # StyleGAN2's mapping is w_dim wide
    return StyleGAN2Config(**{names.get(k, k): v for k, v in kwargs.items()})


def run_train_gan2(args: argparse.Namespace) -> int:
    config = GAN2TrainConfig(network=stylegan2_network(args), total_kimg=args.kimg, batch_size=args.batch,
                             lr=args.lr, r1_gamma=args.gamma, r1_interval=args.r1_interval or 16,
                             pl_weight=args.pl_weight, mirror=not args.no_mirror,
                             seed=args.seed if args.seed is not None else 0)
    world = init_distributed(args.device)
    _, outcome = run_gan2(config, args.data, _options(args, args.kimg), world=world, name=args.name or "gan")
    return _report(args, outcome, "StyleGAN2 training")


def run_train_encoder(args: argparse.Namespace) -> int:
    world = init_distributed(args.device)
    pack = load_pack(args.pack, device="cpu")
    small = pack.resolution < 256
    encoder = EncoderConfig(resolution=pack.resolution, num_layers=pack.code_shape[0], w_dim=pack.code_shape[1],
                            channels_base=args.channels_base or (32 if small else 64),
                            channels_max=args.channels_max or (256 if small else 1024))
    extra = {}
    if args.kind == "domain-guided":
        extra = dict(lambda_adv=args.lambda_adv, lambda_vgg=args.lambda_vgg, r1_gamma=args.gamma,
                     warm_start={None: False, "conventional": True}.get(args.warm_start, args.warm_start))
    config = EncoderTrainConfig(encoder=encoder, total_kimg=args.kimg, batch_size=args.batch, lr=args.lr,
                                kind=args.kind, seed=args.seed if args.seed is not None else 1000, **extra)
    del pack
    outcome = run_encoder(config, args.pack, getattr(args, "data", None), _options(args, args.kimg), world=world,
                          name=args.name)
    return _report(args, outcome, f"{args.kind} encoder training")


def run_export(args: argparse.Namespace) -> int:
    # replaces an earlier export (a pack), never an unrelated folder or the run itself
    check_pack_target(args.out, overwrite=True, inputs=[args.run_dir])
    path = export_run(args.run_dir, args.out, name=args.name)
    info(args, f"wrote model pack {path}")
    return 0


def _recorded(args: argparse.Namespace, key: str):
    """With --resume, a setting as the run folder's train_config.json recorded it (None otherwise)."""
    saved = args.run_dir / "train_config.json"
    if not args.resume or not saved.is_file():
        return None
    try:
        record = read_json(saved, error=CheckpointError)
    except CheckpointError:
        return None  # the runner reports an unreadable record
    value = record.get(key) if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


def run_distill_verb(args: argparse.Namespace) -> int:
    world = init_distributed(args.device)
    teacher = load_pack(args.teacher, device="cpu").generator
    arch = args.arch or _recorded(args, "arch") or DistillConfig().arch
    student = student_config(arch, resolution=teacher.resolution, z_dim=teacher.z_dim, w_dim=args.w_dim,
                             mapping_layers=args.mapping_layers, mapping_lr_mul=args.mapping_lr_mul,
                             fmaps_base=args.fmaps_base, fmaps_max=args.fmaps_max)
    discriminator = DiscriminatorConfig(resolution=teacher.resolution, fmaps_base=32 * teacher.resolution,
                                        fmaps_max=128)
    config = DistillConfig(arch=arch, student=student, total_kimg=args.kimg, adv_kimg=args.adv_kimg,
                           batch_size=args.batch, lr=args.lr, lambda_lpips=args.lambda_lpips,
                           lambda_mix=args.lambda_mix, mixing_prob=args.mixing_prob, lambda_adv=args.lambda_adv,
                           discriminator=discriminator, ema_kimg=args.ema_kimg,
                           seed=args.seed if args.seed is not None else 0)
    del teacher
    outcome = run_distill(config, args.teacher, args.data, _options(args, args.kimg + args.adv_kimg), world=world,
                          name=args.name)
    return _report(args, outcome, "distillation")
