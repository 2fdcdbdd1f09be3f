"""Two domain-guided encoders of one generator, before and after: held-out real faces at 0 and 100 steps.

    python benchmarks/encoder_compare.py --packs before=dcgan-faces64 after=RUNS/pack \
        --out benchmarks/results/encoder_compare [--celeba 32 --utk 60]

The photos and the judging are those of ``real_faces.py`` (held-out CelebA and UTKFace test photos aligned to
the pack's framing; every judged image cropped to the tight UTKFace framing first). For each pack, the encoder
alone (0 steps) and in-domain inversion (100 steps, the pack's defaults) give: LPIPS (VGG) and pixel MSE to the
photo, identity (dlib descriptor distance to the photo; < 0.6 is one person), and the independent judge's
agreement with itself on the photo (gender kept, age correlation).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import idinvert
from idinvert.engine.inversion import InversionConfig
from idinvert.metrics import lpips_distance, mse

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_report  # noqa: E402
from real_faces import SAME_PERSON, Judge, held_out, pearson  # noqa: E402

STEPS = (0, 100)


def figures(pack, x, crop, judge: Judge, photo: tuple) -> dict:
    photo_age, photo_male, photo_desc = photo
    out = {}
    for steps in STEPS:
        t0 = time.perf_counter()
        result = idinvert.invert(x, pack, InversionConfig(steps=steps), batch_size=16,
                                 rng=torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - t0
        recon = result.reconstructions.cpu().clamp(-1, 1)
        tight = judge.tight(recon, crop)
        age, male = judge.age_gender(tight)
        dist = (judge.descriptors(tight) - photo_desc).norm(dim=1).numpy()
        out[str(steps)] = {"lpips": float(lpips_distance(recon, x).mean()), "mse": float(mse(recon, x).mean()),
                           "identity_distance": float(np.median(dist)), "identity_kept": float((dist < SAME_PERSON).mean()),
                           "gender_kept": float((male == photo_male).mean()), "age_corr": pearson(age, photo_age),
                           "seconds_per_photo": round(seconds / len(x), 3)}
    return out


def markdown(report: dict) -> str:
    cols = (("lpips", "LPIPS", "{:.3f}"), ("mse", "MSE", "{:.3f}"), ("identity_distance", "id distance", "{:.3f}"),
            ("identity_kept", "id kept", "{:.0%}"), ("gender_kept", "gender kept", "{:.0%}"),
            ("age_corr", "age corr", "{:.2f}"))
    lines = [f"# Encoders compared on {report['photos']} held-out photos", "",
             f"`{report['command']}` on {report['machine']}, {report['date']}, {report['seconds'] / 60:.0f} min. "
             "Judged on tight face crops; see the script's docstring.", "",
             "| encoder | steps | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for label, entry in report["packs"].items():
        for steps, r in entry["figures"].items():
            lines.append(f"| {label} | {steps} | " + " | ".join(f.format(r[k]) for k, _, f in cols) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packs", nargs="+", required=True, metavar="LABEL=PACK")
    p.add_argument("--celeba", type=int, default=32)
    p.add_argument("--utk", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/encoder_compare"))
    args = p.parse_args()
    start = time.perf_counter()
    judge, report = Judge(), {}
    photos = None
    for entry in args.packs:
        label, name = entry.split("=", 1)
        pack = idinvert.load_pack(name)
        x, kept, crop = held_out(pack, args.celeba, args.utk)
        tight = judge.tight(x, crop)
        photos = len(kept)
        report[label] = {"pack": name, "figures": figures(pack, x, crop, judge, (*judge.age_gender(tight),
                                                                                   judge.descriptors(tight)))}
        print(label, report[label], file=sys.stderr)
    out = {"command": "python benchmarks/encoder_compare.py " + " ".join(sys.argv[1:]), "machine": machine(),
           "date": time.strftime("%Y-%m-%d"), "photos": photos, "seconds": round(time.perf_counter() - start),
           "packs": report}
    write_report(args.out.with_suffix(".json"), out, markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
