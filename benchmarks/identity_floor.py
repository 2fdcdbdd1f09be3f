"""What the identity column can resolve: dlib descriptor cosine between photos of *different* people.

    python benchmarks/identity_floor.py --test DIR [--count 100] --out FILE.json

`idinvert evaluate` reports the identity similarity (cosine of dlib's 128-d face descriptors)
between each photo and its reconstruction, and between each edit and the unedited image. At low
resolution the descriptor separates faces poorly, so this script measures the baseline: the cosine
over all pairs of distinct photos among ``--count`` photos spread evenly over the prepared held-out
set ``--test`` (the same photos as ``evaluate --count N --spread``; UTKFace has one photo per
person in practice). A reconstruction whose similarity is not above this distribution is not
recognisably the same person to the descriptor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from common import machine, write_report
from idinvert.evaluation.imageset import load_image_set
from idinvert.metrics.identity import cached_face_identity
from idinvert.datasets import ImageDataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--test", required=True, type=Path, help="prepared held-out set (prepare-data)")
    ap.add_argument("--count", type=int, default=100, help="photos, evenly spaced over the set")
    ap.add_argument("--out", required=True, type=Path, help="JSON file")
    args = ap.parse_args()
    resolution = ImageDataset(args.test).resolution
    data = load_image_set([str(args.test)], resolution, args.count, None, spread=True)
    descriptors = torch.nn.functional.normalize(cached_face_identity().descriptors(data.images).double(), dim=1)
    n = descriptors.shape[0]
    upper = torch.triu_indices(n, n, 1)
    cosine = (descriptors @ descriptors.T)[upper[0], upper[1]]
    report = {"test": str(args.test), "photos": n, "resolution": resolution, "pairs": cosine.numel(),
              "mean": float(cosine.mean()), "std": float(cosine.std()), "median": float(cosine.median()),
              "p95": float(cosine.quantile(0.95)), "max": float(cosine.max()),
              "command": "python " + " ".join(sys.argv),
              "machine": machine()}
    write_report(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
