"""Reconstruction LPIPS over the same face region for packs with different framings.

    python benchmarks/face_region_lpips.py --count 16 --out benchmarks/results/face_region_lpips.json \
        --tight utkface64=CELEBA_TEST_UTK --loose dcgan-faces64=CELEBA_TEST_DCGAN

Each pack inverts the same held-out photos in its own framing (in-domain, 100 steps). The loose pack's
photo and reconstruction are then cropped to the square that holds the tight framing (``crop_between``
of the two framings) and resampled to 64 px, so both LPIPS values cover the same part of the face.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_report  # noqa: E402

from idinvert.align import framing_from_config  # noqa: E402
from idinvert.attributes.predictor import crop_between, crop_square  # noqa: E402
from idinvert.engine.inversion import InversionConfig, invert  # noqa: E402
from idinvert.metrics.lpips import lpips_distance  # noqa: E402
from idinvert.pack import load_pack  # noqa: E402
from idinvert.datasets import ImageDataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tight", required=True, help="PACK=PREPARED_TEST_SET in its framing")
    ap.add_argument("--loose", required=True, help="PACK=PREPARED_TEST_SET in its framing (same photos)")
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    (tight_name, tight_dir), (loose_name, loose_dir) = (a.split("=", 1) for a in (args.tight, args.loose))
    tight, loose = load_pack(tight_name), load_pack(loose_name)
    sets = {name: ImageDataset(Path(d)) for name, d in ((tight_name, tight_dir), (loose_name, loose_dir))}
    shared = sorted(set(sets[tight_name].index["names"]) & set(sets[loose_name].index["names"]))
    names = [shared[i] for i in np.linspace(0, len(shared) - 1, min(args.count, len(shared))).round().astype(int)]
    crop = crop_between(framing_from_config(loose.config), framing_from_config(tight.config))
    report = {"machine": machine(), "command": "python " + " ".join(sys.argv), "photos": len(names),
              "crop_of_loose_framing": list(crop)}
    for pack, data in ((tight, sets[tight_name]), (loose, sets[loose_name])):
        rows = [data.index["names"].index(n) for n in names]
        x = data.batch(rows)
        recon = invert(x, pack, InversionConfig(steps=100), batch_size=16).reconstructions.clamp(-1, 1)
        entry = {"lpips_own_framing": float(lpips_distance(recon, x).mean())}
        if pack is loose:
            entry["lpips_face_region"] = float(lpips_distance(crop_square(recon, crop, 64),
                                                              crop_square(x, crop, 64)).mean())
        report[pack.name] = entry
    md = (f"| pack | LPIPS, own framing | LPIPS, the tight framing's face region |\n|---|---|---|\n"
          f"| {tight.name} | {report[tight.name]['lpips_own_framing']:.3f} | {report[tight.name]['lpips_own_framing']:.3f} |\n"
          f"| {loose.name} | {report[loose.name]['lpips_own_framing']:.3f} | {report[loose.name]['lpips_face_region']:.3f} |\n")
    write_report(args.out, report, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
