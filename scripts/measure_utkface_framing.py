"""Measure the UTKFace framing template and write ``src/idinvert/assets/framing_utkface.json``.

    python scripts/measure_utkface_framing.py ../shared/data/utkface \
        [--out src/idinvert/assets/framing_utkface.json] [--limit N] [--seed 0]

Reads only the ``train`` split of ``labels.csv`` (never ``test``) and skips the byte-identical
duplicates (``duplicate_of_earlier = 1``). Each 200×200 crop goes through
``idinvert.align.measure_framing`` (dlib HOG detector, upsample 0, the 68-point landmarks);
the template is the mean eye and mouth position in unit coordinates. The file also records the
mean positions that the FFHQ recipe produces on the same faces (``ffhq_recipe_positions``: the
points of ``idinvert.align.ffhq_framing``). ``--limit`` measures a fixed random subset instead.
About 5 minutes for the whole split on one CPU core.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tarfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from idinvert.align import LANDMARK_TERMS, Framing, ffhq_framing, framing_positions, measure_framing
from idinvert.fileio import write_json

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "idinvert" / "assets" / "framing_utkface.json"
TEMPLATE_SIZE = 64  # the default pack's resolution


def train_files(labels: Path) -> list[str]:
    with open(labels, newline="", encoding="utf-8") as f:
        return [row["file"] for row in csv.DictReader(f)
                if row["split"] == "train" and row["duplicate_of_earlier"] != "1"]


def photos_in_tar(tar_path: Path, names: set[str]) -> Iterator[Image.Image]:
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if member.isfile() and Path(member.name).name in names:
                yield Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")


def measure(folder: Path, limit: int | None, seed: int) -> dict:
    names = train_files(folder / "labels.csv")
    if limit is not None and limit < len(names):
        names = sorted(np.random.default_rng(seed).choice(names, size=limit, replace=False).tolist())
    start = time.perf_counter()
    result = measure_framing(photos_in_tar(folder / "images.tar", set(names)), size=TEMPLATE_SIZE, name="utkface")
    seconds = time.perf_counter() - start
    ffhq = np.stack([framing_positions(lm * 200.0, ffhq_framing(256)) for lm in result.landmarks]).mean(0)
    framing: Framing = result.framing
    return {
        "framing": framing.to_dict(),
        "measured_on": "UTKFace aligned & cropped (200×200), train split of labels.csv, duplicates skipped",
        "photos": len(names), "faces_measured": result.count, "no_face_found": result.missed,
        "rejected_as_outliers": result.rejected, "subset": None if limit is None else {"limit": limit, "seed": seed},
        "method": "dlib HOG detector (upsample 0) + 68-point shape predictor; mean of the eye centres "
                  "(landmarks 36–41, 42–47), the mouth-corner midpoint (48, 54) and the nose tip (30) / photo size",
        "landmark_terms": LANDMARK_TERMS,
        "spread": result.spread(),
        "ffhq_recipe_positions": {k: np.round(ffhq[i], 4).tolist()
                                  for i, k in enumerate(("eye_left", "eye_right", "mouth"))},
        "mean_landmarks": np.round(result.landmarks.mean(0), 4).tolist(),
        "seconds": round(seconds, 1),
        "reproduce": "python scripts/measure_utkface_framing.py ../shared/data/utkface",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("utkface", type=Path, help="the folder with labels.csv and images.tar")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--limit", type=int, default=None, help="a fixed random subset of this many train photos")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    record = measure(args.utkface, args.limit, args.seed)
    write_json(args.out, record)
    print(f"{record['faces_measured']} faces of {record['photos']} photos → {args.out}: {record['framing']}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
