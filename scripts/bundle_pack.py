"""Copy a trained pack into the package as the bundled default, and check the float16 encoders.

    python scripts/default_pack/bundle.py --pack runs/enc/pack --card CARD.md --test utkface64_test

Writes ``src/idinvert/packs/utkface64`` (encoders stored as float16, the UTKFace framing added to
``config.json``) and prints how far the float16 encoders' codes and reconstructions move on the
first 64 photos of ``--test``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from idinvert.align import utkface_framing
from idinvert.pack import copy_pack, load_pack, update_pack
from idinvert.training.data import ImageDataset

OUT = Path(__file__).resolve().parents[2] / "src" / "idinvert" / "packs" / "utkface64"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pack", required=True, type=Path)
    ap.add_argument("--card", required=True, type=Path, help="the model card (README.md of the pack)")
    ap.add_argument("--test", required=True, type=Path, help="prepared held-out photos for the float16 check")
    args = ap.parse_args()
    source = load_pack(args.pack, with_discriminator=True)
    copy_pack(source, OUT, name="utkface64", half=("encoder", "conventional_encoder"),
              card=args.card.read_text(encoding="utf-8"), overwrite=True)
    update_pack(OUT, config_updates={"framing": utkface_framing(64).to_dict()})
    bundled = load_pack(OUT)
    x = ImageDataset(args.test).batch(list(range(64)))
    with torch.no_grad():
        for key in ("encoder", "conventional_encoder"):
            a, b = getattr(source, key)(x), getattr(bundled, key)(x)
            mse_a = (source.generator.synthesis(a) - x).square().mean().item()
            mse_b = (bundled.generator.synthesis(b) - x).square().mean().item()
            print(f"{key}: max |Δcode| {(a - b).abs().max().item():.4f}, relative {((a - b).norm() / a.norm()).item():.5f}, "
                  f"reconstruction MSE float32 {mse_a:.6f} → float16 {mse_b:.6f}")


if __name__ == "__main__":
    main()
