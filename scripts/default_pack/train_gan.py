"""The GAN run of the bundled default pack, exactly as it was trained (library API, not the CLI).

    python scripts/default_pack/train_gan.py --data utkface64_train --run-dir runs/gan64 --stop-kimg 484
    python scripts/default_pack/train_gan.py --data utkface64_train --run-dir runs/gan64 --stop-kimg 560.576 --compressed

The configuration equals ``idinvert train-gan --preset small64 --lod-kimg 150 --r1-interval 4 --seed 1``
(1500 kimg planned), but the run folder records the library's configuration, so resume it with
this script. The first call trains (and resumes) on StyleGAN's lod schedule; the default pack's run
stopped at 484 k images and went on with ``--compressed``: the 16→32 fade that was under way ends
at 505 k, 32→64 fades in over 505–545 k, then 64 px to the stop (560,576 images in the pack).
Export with ``idinvert export RUN --out PACK``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import idinvert.training.gan as gan
from idinvert.networks.config import DiscriminatorConfig, GeneratorConfig
from idinvert.datasets import ImageDataset
from idinvert.training.runner import RunOptions

CONFIG = gan.GANTrainConfig(
    generator=GeneratorConfig(resolution=64, z_dim=256, w_dim=256, mapping_fmaps=256, fmaps_base=2048, fmaps_max=128),
    discriminator=DiscriminatorConfig(resolution=64, fmaps_base=2048, fmaps_max=128),
    total_kimg=1500, batch_size=32, minibatch_by_resolution=((8, 64), (16, 64)), lr=0.002, r1_interval=4,
    lod_initial_resolution=8, lod_training_kimg=150, lod_transition_kimg=150, seed=1)
COMPRESS_FROM_KIMG = 484.0


def compressed_schedule(plain):
    """``plain`` up to 484 k images, then the shortened growth described above."""
    def schedule(config, images_seen):
        k = images_seen / 1000.0
        if k < COMPRESS_FROM_KIMG:
            return plain(config, images_seen)
        start = plain(config, int(COMPRESS_FROM_KIMG * 1000))[0]
        if k < 505.0:
            lod = start + (1.0 - start) * (k - COMPRESS_FROM_KIMG) / (505.0 - COMPRESS_FROM_KIMG)
        elif k < 545.0:
            lod = 1.0 - (k - 505.0) / 40.0
        else:
            lod = 0.0
        return lod, config.generator.resolution >> int(math.floor(lod)), config.batch_size
    return schedule


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--stop-kimg", type=float, default=CONFIG.total_kimg)
    ap.add_argument("--compressed", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.compressed:
        gan.schedule = compressed_schedule(gan.schedule)
    options = RunOptions(run_dir=args.run_dir, total_images=int(args.stop_kimg * 1000),
                         resume=(args.run_dir / "checkpoint.pt").exists(), snapshot_images=25000,
                         checkpoint_minutes=5)
    _, outcome = gan.train_gan(CONFIG, ImageDataset(args.data), options)
    print(outcome)


if __name__ == "__main__":
    main()
