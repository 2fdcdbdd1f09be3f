"""How much FID and KID move with the set size: the floor and the spread of small-set distances.

    python benchmarks/fid_floor.py --pack PACK --test DIR --out FILE.json [--sizes 48,100,200,500]

`idinvert evaluate` compares n reconstructions with the same n real photos, and on a CPU n is
small (optimising 1000 steps costs about half a minute per photo). This script measures what such
a number can resolve, on the prepared held-out set ``--test`` (Inception features computed once):

- **real vs real**: two *disjoint* random sets of n real photos each. Their FID is pure
  small-sample bias plus noise (the two sets come from one distribution), so it is the floor
  under any FID of n images; its spread over ``--draws`` draws is the noise of an FID at that n.
- **samples vs real**: n generator samples (z ~ N(0, I), no truncation) against n real photos,
  with the same draws; the gap to the floor is what the model's own error adds.

KID (unbiased MMD², polynomial kernel, ×1e3) is reported beside FID on the same sets: its floor
should be ≈ 0 at every n. Writes the JSON and a Markdown table next to it, with the machine and
the command.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from common import machine, write_report
from idinvert.metrics.fid import fid_from_features
from idinvert.metrics.inception import inception_features
from idinvert.metrics.kid import kid_from_features
from idinvert.pack import load_pack
from idinvert.datasets import ImageDataset


def features_of_batches(batches, total: int) -> torch.Tensor:
    out, done = [], 0
    for images in batches:
        with torch.no_grad():
            out.append(inception_features(images))
        done += images.shape[0]
        print(f"\r  Inception features {done}/{total}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return torch.cat(out)


def real_features(test: ImageDataset, batch: int) -> torch.Tensor:
    n = len(test)
    return features_of_batches((test.batch(list(range(lo, min(lo + batch, n)))) for lo in range(0, n, batch)), n)


def sample_features(pack, count: int, batch: int, seed: int) -> torch.Tensor:
    rng = torch.Generator().manual_seed(seed)

    def batches():
        for lo in range(0, count, batch):
            z = torch.randn(min(batch, count - lo), pack.generator.config.z_dim, generator=rng)
            with torch.no_grad():
                yield pack.generator(z).clamp(-1, 1)

    return features_of_batches(batches(), count)


def distances(a: torch.Tensor, b: torch.Tensor, seed: int) -> tuple[float, float]:
    kid = kid_from_features(a, b, subsets=10, generator=torch.Generator().manual_seed(seed))
    return fid_from_features(a, b), 1e3 * kid.mean


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def measure(real: torch.Tensor, fake: torch.Tensor | None, sizes: list[int], draws: int, seed: int) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(seed)
    for n in sizes:
        if 2 * n > real.shape[0]:
            raise SystemExit(f"--sizes: {n} needs {2 * n} real images for two disjoint sets; the test set has "
                             f"{real.shape[0]}")
        found: dict[str, list[float]] = {"real_fid": [], "real_kid": [], "sample_fid": [], "sample_kid": []}
        for d in range(draws):
            order = torch.randperm(real.shape[0], generator=g)
            a, b = real[order[:n]], real[order[n:2 * n]]
            fid, kid = distances(a, b, seed + d)
            found["real_fid"].append(fid)
            found["real_kid"].append(kid)
            if fake is not None:
                pick = torch.randperm(fake.shape[0], generator=g)[:n]
                fid, kid = distances(a, fake[pick], seed + d)
                found["sample_fid"].append(fid)
                found["sample_kid"].append(kid)
            print(f"  n = {n}: draw {d + 1}/{draws}", file=sys.stderr, flush=True)
        rows.append({"n": n, **{k: summary(v) for k, v in found.items() if v}})
    return rows


def markdown(report: dict) -> str:
    lines = ["# FID and KID of small sets: the floor (real vs real) and the model (samples vs real)", "",
             f"Held-out set: `{report['test']}` ({report['real_images']} photos); {report['draws']} random draws "
             f"per size; pack `{report['pack']}`.", "", f"Machine: {report['machine']}; {report['seconds']} s.", "",
             "Command:", "", "```", report["command"], "```", "",
             "| n | FID real vs real (floor) | KID×1e3 real vs real | FID samples vs real "
             "| KID×1e3 samples vs real |",
             "|---|---|---|---|---|"]

    def cell(row: dict, key: str) -> str:
        s = row.get(key)
        if not s:
            return "–"
        digits = 1 if "fid" in key else 2
        return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"

    for row in report["rows"]:
        lines.append(f"| {row['n']} | {cell(row, 'real_fid')} | {cell(row, 'real_kid')} | {cell(row, 'sample_fid')} "
                     f"| {cell(row, 'sample_kid')} |")
    lines += ["", "Mean ± standard deviation over the draws. Two disjoint sets of real photos of the same size have "
              "the FID in the first column: an FID of n images means little below it, and differences smaller "
              "than a few standard deviations are noise.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pack", default=None, help="model pack (default: the bundled one)")
    ap.add_argument("--test", required=True, type=Path, help="prepared held-out set (prepare-data)")
    ap.add_argument("--out", required=True, type=Path, help="JSON file (a .md is written beside it)")
    ap.add_argument("--sizes", default="48,100,200,500", help="set sizes n, comma-separated")
    ap.add_argument("--draws", type=int, default=10, help="random draws per size")
    ap.add_argument("--samples", type=int, default=1000, help="generator samples to draw the sample sets from")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    start = time.perf_counter()
    pack = load_pack(args.pack)
    test = ImageDataset(args.test)
    real = real_features(test, args.batch)
    fake = sample_features(pack, args.samples, args.batch, args.seed) if args.samples else None
    report = {"pack": args.pack or "default", "test": str(args.test), "real_images": len(test),
              "samples": args.samples, "draws": args.draws, "seed": args.seed,
              "command": "python " + " ".join(sys.argv),
              "machine": machine(),
              "rows": measure(real, fake, sizes, args.draws, args.seed)}
    report["seconds"] = round(time.perf_counter() - start, 1)
    write_report(args.out, report, markdown(report))


if __name__ == "__main__":
    main()
