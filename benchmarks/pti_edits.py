"""Why pivotal tuning weakens edits, and which tuning keeps them: a measurement on held-out real faces.

    python benchmarks/pti_edits.py --pack dcgan-faces64 --celeba 8 --utk 10 --out benchmarks/results/pti_edits

The photos (held-out CelebA and UTKFace test photos, aligned to the pack's framing as ``idinvert align`` does)
are inverted in-domain, then each tuning variant tunes one generator per photo around that pivot. For each
variant: the reconstruction (LPIPS, steps, time), and what a fixed edit does — the same boundary distance
d = ±3 for age, gender and smile, rendered by the tuned generators — measured three ways: the change the
pack's predictor reads (per unit of d, as a fraction of what the untuned generator gives), how far the two
edited images are apart (LPIPS), and the independent judge's age gap; plus the dlib identity distance of the
reconstruction and of a smile edit (probability 0.9) to the photo, all on the tight face crops of
``real_faces.py``. A ratio well below 1 is the tuned generator pulling the edited codes back to the person.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import idinvert
from idinvert.attributes import load_predictor
from idinvert.attributes.amounts import Amount, attribute_reader, code_renderer, pack_step, solve_distances
from idinvert.metrics import lpips_distance

sys.path.insert(0, str(Path(__file__).parent))
from real_faces import Judge, held_out  # noqa: E402

#: tuning variants: name → RefineConfig keyword arguments (on top of the CLI's settings)
VARIANTS = {
    "all layers (PTI)": {},
    "from the 16 px layer": {"layers": ("convTr3", "batchNorm3", "convTr4", "batchNorm4", "convTr5")},
    "from the 32 px layer": {"layers": ("convTr4", "batchNorm4", "convTr5")},
    "all + locality α 3": {"locality": True, "locality_alpha": 3.0, "locality_psi": 1.0},
    "all + locality α 10": {"locality": True, "locality_alpha": 10.0, "locality_psi": 1.0},
    "from 32 px + locality α 3": {"layers": ("convTr4", "batchNorm4", "convTr5"), "locality": True,
                                  "locality_alpha": 3.0, "locality_psi": 1.0},
}
EDITED = ("age", "gender", "smile")
D = 3.0


def measure(pack, x, codes, tuned, predictor, judge: Judge, crop, photo_desc) -> dict:
    render = code_renderer(pack.generator, tuned, batch_size=32)
    n = len(codes)
    rows = torch.arange(n)
    recon = render(codes, rows)
    out = {"lpips": float(lpips_distance(recon.clamp(-1, 1), x).mean()),
           "identity_distance": float(judge.distances(recon, crop, photo_desc).median())}
    for attribute in EDITED:
        step = pack_step(pack, attribute)
        lo, hi = render(codes - D * step, rows), render(codes + D * step, rows)
        read = attribute_reader(predictor, attribute)
        out[f"{attribute}_predictor_change"] = float((read(hi) - read(lo)).mean())
        out[f"{attribute}_edit_lpips"] = float(lpips_distance(hi.clamp(-1, 1), lo.clamp(-1, 1)).mean())
        if attribute == "age":
            a_hi, _ = judge.age_gender(judge.tight(hi, crop))
            a_lo, _ = judge.age_gender(judge.tight(lo, crop))
            out["age_judge_gap"] = float(np.median(a_hi - a_lo))
    smile_step, age_step = pack_step(pack, "smile"), pack_step(pack, "age")
    smile = solve_distances(attribute_reader(predictor, "smile"), render, codes, smile_step, Amount(to=0.9),
                            attribute="smile")
    smiled = render(codes + smile.distances.view(-1, 1, 1) * smile_step, rows)
    dist = judge.distances(smiled, crop, photo_desc)
    out["smile_distance_median"] = float(smile.distances.abs().median())
    out["smile_identity_kept"] = float((dist < 0.6).float().mean())
    ages = {}
    for sign in (-1, 1):
        solved = solve_distances(attribute_reader(predictor, "age"), render, codes, age_step,
                                 Amount(by=15.0 * sign), attribute="age")
        edited = render(codes + solved.distances.view(-1, 1, 1) * age_step, rows)
        ages[sign] = judge.age_gender(judge.tight(edited, crop))[0]
        out[f"age_{'plus' if sign > 0 else 'minus'}_reached"] = float(solved.reachable.float().mean())
    out["age_units_judge_gap"] = float(np.median(ages[1] - ages[-1]))
    out["age_units_confirmed"] = float(((ages[1] - ages[-1]) >= 10).mean())
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", default="dcgan-faces64")
    p.add_argument("--celeba", type=int, default=8)
    p.add_argument("--utk", type=int, default=10)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--steps", type=int, default=60, help="tuning steps at most (the demo's cap: 60; PTI: 350)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/pti_edits"))
    args = p.parse_args()
    start = time.perf_counter()
    pack = idinvert.load_pack(args.pack)
    x, kept, crop = held_out(pack, args.celeba, args.utk)
    judge, predictor = Judge(), load_predictor(pack)
    photo_desc = judge.descriptors(judge.tight(x, crop))
    codes = idinvert.invert(x, pack, batch_size=16, rng=torch.Generator().manual_seed(0)).codes.cpu()
    results = {"untuned (in-domain)": {**measure(pack, x, codes, None, predictor, judge, crop, photo_desc),
                                       "steps": 0, "seconds_per_photo": 0.0}}
    for name in args.variants:
        t0 = time.perf_counter()
        refined = idinvert.refine(x, codes, pack, idinvert.RefineConfig(steps=args.steps, **VARIANTS[name]), batch_size=len(x),
                                  rng=torch.Generator().manual_seed(0))
        seconds = (time.perf_counter() - t0) / len(x)
        results[name] = {**measure(pack, x, codes, refined.tuned, predictor, judge, crop, photo_desc),
                         "steps": float(refined.steps_run.float().mean()), "seconds_per_photo": round(seconds, 2)}
        print(name, json.dumps(results[name]), file=sys.stderr)
    base = results["untuned (in-domain)"]
    for r in results.values():
        for attribute in EDITED:
            r[f"{attribute}_change_ratio"] = r[f"{attribute}_predictor_change"] / base[f"{attribute}_predictor_change"]
    report = {"command": "python benchmarks/pti_edits.py " + " ".join(sys.argv[1:]), "pack": pack.name,
              "photos": len(kept), "date": time.strftime("%Y-%m-%d"), "seconds": round(time.perf_counter() - start),
              "threads": torch.get_num_threads(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    cols = [("lpips", "LPIPS", "{:.3f}"), ("steps", "steps", "{:.0f}"), ("seconds_per_photo", "s/photo", "{:.1f}"),
            ("age_change_ratio", "age Δ ratio", "{:.2f}"), ("gender_change_ratio", "gender Δ ratio", "{:.2f}"),
            ("smile_change_ratio", "smile Δ ratio", "{:.2f}"), ("age_edit_lpips", "age ±3 LPIPS apart", "{:.3f}"),
            ("age_judge_gap", "judge age gap ±3 (y)", "{:+.1f}"),
            ("age_units_confirmed", "−15/+15 y ≥ 10 y apart", "{:.0%}"), ("identity_distance", "id dist", "{:.3f}"),
            ("smile_identity_kept", "id kept after smile", "{:.0%}")]
    lines = [f"# What tuning does to edits ({report['pack']}, {report['photos']} held-out photos)", "",
             f"`{report['command']}`, {report['date']}, {report['seconds'] / 60:.0f} min on {report['threads']} CPU "
             f"threads. Δ ratio: the predictor's change between d = −3 and +3 with the tuned generators, over the "
             f"untuned generator's.", "",
             "| variant | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in report["results"].items():
        lines.append(f"| {name} | " + " | ".join(fmt.format(r[k]) for k, _, fmt in cols) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
