"""Copy a trained pack into the package as a bundled pack, and check what float16 storage changes.

    python scripts/bundle_pack.py --pack runs/enc/pack --name utkface64 --card CARD.md --test utkface64_test \
        --framing utkface
    python scripts/bundle_pack.py --pack runs/dcgan/enc/pack --name dcgan-faces64 --card CARD.md \
        --test runs/dcgan/celeba_test

Writes ``src/idinvert/packs/NAME`` (the encoders stored as float16; ``--framing utkface`` adds the
UTKFace framing to ``config.json`` for a pack that has none) and prints how far the float16 encoders'
codes and reconstructions move on the first 64 photos of ``--test``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from idinvert.align import utkface_framing
from idinvert.pack import copy_pack, load_pack, update_pack
from idinvert.datasets import ImageDataset

PACKS = Path(__file__).resolve().parents[1] / "src" / "idinvert" / "packs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pack", required=True, type=Path)
    ap.add_argument("--name", required=True, help="the bundled pack's name and folder")
    ap.add_argument("--framing", choices=("utkface",), help="add this framing to config.json")
    ap.add_argument("--card", required=True, type=Path, help="the model card (README.md of the pack)")
    ap.add_argument("--test", required=True, type=Path, help="prepared held-out photos for the float16 check")
    args = ap.parse_args()
    source = load_pack(args.pack, with_discriminator=True)
    out = PACKS / args.name
    copy_pack(source, out, name=args.name, half=("encoder", "conventional_encoder"),
              card=args.card.read_text(encoding="utf-8"), overwrite=True)
    if args.framing == "utkface":
        update_pack(out, config_updates={"framing": utkface_framing(64).to_dict()})
    bundled = load_pack(out)
    x = ImageDataset(args.test).batch(list(range(64)))
    with torch.no_grad():
        for key in ("encoder", "conventional_encoder"):
            a, b = getattr(source, key)(x), getattr(bundled, key)(x)
            mse_a = (source.generator.synthesize(a) - x).square().mean().item()
            mse_b = (bundled.generator.synthesize(b) - x).square().mean().item()
            print(f"{key}: max |Δcode| {(a - b).abs().max().item():.4f}, relative {((a - b).norm() / a.norm()).item():.5f}, "
                  f"reconstruction MSE float32 {mse_a:.6f} → float16 {mse_b:.6f}")


if __name__ == "__main__":
    main()
