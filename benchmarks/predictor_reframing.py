"""The bundled attribute predictor in its own framing and, through ``input_crop``, in another pack's.

    python benchmarks/predictor_reframing.py --source utkface64 --target PACK_WITH_REFRAMED_PREDICTOR \
        --source-sets celeba=CELEBA_TEST_UTK utk=UTK_TEST_UTK --target-sets celeba=CELEBA_TEST_T utk=UTK_TEST_T \
        --out benchmarks/results/predictor_reframing.json

The same held-out photos, prepared once in each framing (``prepare-data --split test --align ...``):
ROC AUC of the edited attributes on CelebA test, age MAE and gender AUC on UTKFace test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_report  # noqa: E402

from idinvert.attributes import load_predictor  # noqa: E402
from idinvert.attributes.predictor import roc_auc  # noqa: E402
from idinvert.attributes.train import dataset_targets  # noqa: E402
from idinvert.pack import load_pack  # noqa: E402
from idinvert.datasets import ImageDataset  # noqa: E402

ATTRIBUTES = ("Smiling", "Male", "Eyeglasses", "Young", "Blond_Hair", "Mouth_Slightly_Open")


def measure(pack_name: str, sets: dict[str, Path]) -> dict:
    predictor = load_predictor(load_pack(pack_name)).eval()
    out = {}
    for name, folder in sets.items():
        data = ImageDataset(folder)
        x = data.batch(np.arange(len(data)))
        with torch.no_grad():
            logits, age = torch.cat([predictor(c)[0] for c in x.split(128)]), torch.cat([predictor(c)[1] for c in x.split(128)])
        targets = dataset_targets(data, predictor.config.binary)
        row = {"photos": len(data)}
        for attr in ATTRIBUTES:
            labels = targets.binary[:, predictor.index(attr)]
            known = ~torch.isnan(labels)
            if known.sum() > 0 and 0 < labels[known].sum() < known.sum():
                row[f"auc_{attr}"] = round(roc_auc(logits[known, predictor.index(attr)], labels[known]), 4)
        known = ~torch.isnan(targets.age)
        if known.any():
            row["age_mae"] = round(float((age[known] - targets.age[known]).abs().mean()), 2)
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--source-sets", nargs="+", required=True)
    ap.add_argument("--target-sets", nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    parse = lambda values: {v.split("=", 1)[0]: Path(v.split("=", 1)[1]) for v in values}  # noqa: E731
    report = {"machine": machine(), "command": "python " + " ".join(sys.argv),
              "source": {"pack": args.source, **measure(args.source, parse(args.source_sets))},
              "target": {"pack": args.target, **measure(args.target, parse(args.target_sets))}}
    lines = ["| framing | set | photos | " + " | ".join(f"AUC {a}" for a in ATTRIBUTES) + " | age MAE |",
             "|---|---|---|" + "---|" * (len(ATTRIBUTES) + 1)]
    for side in ("source", "target"):
        for name, row in report[side].items():
            if name == "pack":
                continue
            cells = [str(row.get(f"auc_{a}", "–")) for a in ATTRIBUTES]
            lines.append(f"| {report[side]['pack']} | {name} | {row['photos']} | " + " | ".join(cells)
                         + f" | {row.get('age_mae', '–')} |")
    write_report(args.out, report, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
