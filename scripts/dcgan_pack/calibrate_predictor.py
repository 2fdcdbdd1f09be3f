"""Calibrate a pack's attribute predictor on labelled photos aligned to the pack's framing.

    python scripts/dcgan_pack/calibrate_predictor.py PACK [--data ../shared/data] [--cache ~/.cache/idinvert/calib]
        [--utk 1200] [--dry-run]

Yes/no attributes are calibrated on CelebA's ``val`` split (600 photos no network here trained on: not the
predictor, the encoder or a boundary). Age is fitted too, on an evenly spread subset of UTKFace's ``train``
split (the only age labels), but only reported, not applied (the report says why). Every photo is
aligned to the pack's framing as ``idinvert align`` does (the largest face).
Writes ``predictor.calibration`` (``{"Smiling": [a, b], ...}``, see ``idinvert.attributes.calibration``) and a
``predictor.report.calibration`` entry with the fits' before/after figures into the pack's config.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import torch

from idinvert.align import framing_from_config, utkface_framing
from idinvert.attributes import load_predictor
from idinvert.attributes.calibration import fit_linear, fit_platt, log_loss
from idinvert.attributes.train import predict_dataset
from idinvert.datasets import ImageDataset, prepare_dataset
from idinvert.pack import load_pack, update_pack

#: CelebA labels calibrated, and the UTKFace gender label joins Male
BINARY = ("Smiling", "Male", "Eyeglasses", "Mouth_Slightly_Open", "Blond_Hair", "No_Beard", "Bangs",
          "Black_Hair", "Gray_Hair", "Young")


def prepared(data: Path, cache: Path, pack, utk: int) -> tuple[ImageDataset, ImageDataset]:
    framing = (framing_from_config(pack.config) or utkface_framing()).with_size(pack.resolution)
    key = f"{pack.name}-{pack.resolution}"
    celeba = prepare_dataset(data / "celeba6k" / "images.tar", cache / f"celeba-val-{key}", resolution=pack.resolution,
                             labels=data / "celeba6k" / "attributes.csv", split="val", framing=framing)
    rows = [r for r in csv.DictReader(open(data / "utkface" / "labels.csv", newline=""))
            if r["split"] == "train" and r.get("duplicate_of_earlier") != "1" and r["age"] and r["gender"]]
    rows = rows[:: max(1, len(rows) // utk)][:utk]  # evenly through the list (it is sorted by age)
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "labels.csv"
        with open(subset, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        utkface = prepare_dataset(data / "utkface" / "images.tar", cache / f"utk-train{utk}-{key}",
                                  resolution=pack.resolution, labels=subset, split="train", framing=framing)
    return ImageDataset(celeba), ImageDataset(utkface)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pack", type=Path)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "idinvert" / "calib")
    p.add_argument("--utk", type=int, default=1200, help="UTKFace train photos for the age fit")
    p.add_argument("--dry-run", action="store_true", help="print the fits, write nothing")
    args = p.parse_args(argv)
    pack = load_pack(args.pack)
    predictor = load_predictor(pack)
    celeba, utkface = prepared(args.data, args.cache, pack, args.utk)
    names = [n for n in BINARY if n in predictor.names]
    with torch.no_grad():  # raw logits and ages, one pass over each set
        cel_logits, _ = predict_dataset(predictor, celeba)
        utk_logits, utk_age = predict_dataset(predictor, utkface)
    cel = {n: cel_logits[:, predictor.index(n)] for n in names}
    utk = {"Male": utk_logits[:, predictor.index("Male")], "age": utk_age}
    calibration, report = {}, {"photos": {"celeba_val": len(celeba), "utkface_train": len(utkface)}, "fits": {}}
    for name in names:
        logits = cel[name]
        labels = torch.tensor([float(row[name]) for row in celeba.labels])
        if name == "Male":  # UTKFace's gender label joins CelebA's
            logits = torch.cat([logits, utk["Male"]])
            labels = torch.cat([labels, torch.tensor([1.0 - float(row["gender"]) for row in utkface.labels])])
        try:
            a, b = fit_platt(logits, labels)
        except ValueError as exc:
            print(f"{name}: not calibrated ({exc})", file=sys.stderr)
            continue
        calibration[name] = [round(a, 4), round(b, 4)]
        positive = labels == 1
        before, after = torch.sigmoid(logits), torch.sigmoid(a * logits + b)
        report["fits"][name] = {
            "n": len(labels), "positives": int(positive.sum()), "scale": round(a, 4), "shift": round(b, 4),
            "log_loss_before": round(log_loss(logits, labels), 4),
            "log_loss_after": round(log_loss(a * logits + b, labels), 4),
            "median_p_positives_before": round(float(before[positive].median()), 3),
            "median_p_positives_after": round(float(after[positive].median()), 3),
            "median_p_negatives_before": round(float(before[~positive].median()), 3),
            "median_p_negatives_after": round(float(after[~positive].median()), 3),
            "share_positives_at_least_0.9_before": round(float((before[positive] >= 0.9).float().mean()), 3),
            "share_positives_at_least_0.9_after": round(float((after[positive] >= 0.9).float().mean()), 3),
            "share_negatives_at_least_0.9_after": round(float((after[~positive] >= 0.9).float().mean()), 3)}
    true_age = torch.tensor([float(row["age"]) for row in utkface.labels])
    a, b = fit_linear(utk["age"], true_age)
    slope = fit_linear(true_age, utk["age"])[0]
    report["fits"]["age"] = {
        "n": len(true_age), "scale": round(a, 4), "shift": round(b, 4), "reading_per_labelled_year": round(slope, 3),
        "mae_before": round(float((utk["age"] - true_age).abs().mean()), 2),
        "mae_after": round(float((a * utk["age"] + b - true_age).abs().mean()), 2),
        "applied": False,
        "why_not": ("the least-squares line barely lowers the error and, with its scale above 1, would make every "
                    "'+15 years' a smaller edit; the reading already moves less than the labelled age (the slope "
                    "above), so a change read as 15 years is already a larger labelled change")}
    report["how"] = ("Platt scaling on CelebA val (Male also on UTKFace train gender), age by least squares on an "
                     "even UTKFace train subset; photos aligned to the pack's framing "
                     "(scripts/dcgan_pack/calibrate_predictor.py)")
    print(json.dumps({"calibration": calibration, "report": report}, indent=1))
    if not args.dry_run:
        entry = dict(pack.config["predictor"])
        entry["calibration"] = calibration
        entry["report"] = {**(entry.get("report") or {}), "calibration": report}
        update_pack(args.pack, config_updates={"predictor": entry})
        print(f"calibration written to {args.pack}/config.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
