"""How close a distilled StyleGAN is to its teacher, and whether its W+ layers separate (issue 14).

    python benchmarks/distill_figures.py --student PACK --teacher dcgan-faces64 --run RUN_DIR \
        --out docs/stylegan-faces64/distill.json --pictures docs/stylegan-faces64

1. Fidelity on ``--samples`` fixed prior samples (seed ``--seed``): the teacher's image T(z) and the
   student's S(z), both without truncation, compared per sample by LPIPS (AlexNet trunk, the loss of
   the distillation, and the VGG trunk), L1 and PSNR; mean, median and the 10th/90th percentiles.
   For scale, the same LPIPS between teacher images of *different* z (each T(z) against the next one):
   a student no better than a random face would score that.
2. Pictures: ``teacher_vs_student.png`` (the first eight z: teacher row, student row) and
   ``style_mixing.png`` (rows: faces A, columns: faces B; each cell takes the coarse layers
   ``0 … cutoff−1`` from A and the rest from B, so pose and face shape follow the row and colour, light
   and texture the column).
3. Training cost from the run's ``log.jsonl``: images seen, wall time summed over resumed chunks, and
   the median images/s.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_report  # noqa: E402

from idinvert.engine.editing import mix  # noqa: E402
from idinvert.engine.tuned import synthesize  # noqa: E402
from idinvert.evaluation.plots import labelled_grid  # noqa: E402
from idinvert.metrics.lpips import lpips_distance  # noqa: E402
from idinvert.pack import load_pack  # noqa: E402


def summary(values: np.ndarray) -> dict:
    return {"mean": float(values.mean()), "median": float(np.median(values)),
            "p10": float(np.percentile(values, 10)), "p90": float(np.percentile(values, 90))}


def images(generator, z: torch.Tensor, batch: int = 50) -> torch.Tensor:
    out = [synthesize(generator, generator.sample_codes(z[i:i + batch], truncation_psi=1.0))
           for i in range(0, len(z), batch)]
    return torch.cat(out).clamp(-1, 1)


def pairwise(a: torch.Tensor, b: torch.Tensor, batch: int = 50) -> dict[str, np.ndarray]:
    """Per-pair LPIPS (alex, vgg), L1 and PSNR (images in [-1, 1], PSNR on [0, 1])."""
    alex, vgg = [], []
    with torch.no_grad():
        for i in range(0, len(a), batch):
            alex.append(lpips_distance(a[i:i + batch], b[i:i + batch], net="alex"))
            vgg.append(lpips_distance(a[i:i + batch], b[i:i + batch], net="vgg"))
    l1 = (a - b).abs().mean(dim=(1, 2, 3))
    mse01 = ((a - b) / 2).square().mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return {"lpips_alex": torch.cat(alex).numpy(), "lpips_vgg": torch.cat(vgg).numpy(),
            "l1": l1.numpy(), "psnr": (-10 * torch.log10(mse01)).numpy()}


def training_cost(run: Path) -> dict | None:
    """Images, wall seconds (chunks of a resumed run add up) and median images/s from ``log.jsonl``."""
    log = run / "log.jsonl"
    if not log.is_file():
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "images" in r and "seconds" in r]
    if not rows:
        return None
    total, last = 0.0, 0.0
    for r in rows:  # a resumed chunk may restart its clock
        if r["seconds"] < last:
            total += last
        last = r["seconds"]
    total += last
    rates = [r["img_per_s"] for r in rows if r.get("img_per_s")]
    config = json.loads((run / "train_config.json").read_text()) if (run / "train_config.json").is_file() else {}
    return {"images": int(rows[-1]["images"]), "wall_hours": total / 3600,
            "median_img_per_s": float(np.median(rates)) if rates else None,
            "final_losses": {k: rows[-1][k] for k in ("l1", "lpips", "mix") if k in rows[-1]},
            "batch_size": config.get("batch_size"), "student": config.get("student")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", required=True, help="the distilled pack")
    ap.add_argument("--teacher", default="dcgan-faces64")
    ap.add_argument("--run", type=Path, default=None, help="the distillation run folder (for its cost)")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--cutoff", type=int, nargs="+", default=[4],
                    help="first layer taken from the column face (default 4); several: one picture each")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pictures", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    student, teacher = load_pack(args.student), load_pack(args.teacher)
    s, t = student.generator, teacher.generator
    if s.z_dim != t.z_dim or s.resolution != t.resolution:
        raise SystemExit(f"{student.name} (z {s.z_dim}, {s.resolution} px) cannot be compared with "
                         f"{teacher.name} (z {t.z_dim}, {t.resolution} px)")
    z = torch.randn(args.samples, t.z_dim, generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        ti, si = images(t, z), images(s, z)
    match = pairwise(si, ti)
    unrelated = pairwise(ti, ti.roll(1, dims=0))
    report = {
        "machine": machine(), "command": "python " + " ".join(sys.argv), "student": student.name,
        "teacher": teacher.name, "samples": args.samples,
        "seed": args.seed,
        "student_vs_teacher": {k: summary(v) for k, v in match.items()},
        "teacher_vs_other_teacher_face": {k: summary(v) for k, v in unrelated.items() if k.startswith("lpips")},
        "training": training_cost(args.run) if args.run else None,
    }
    if args.pictures:
        args.pictures.mkdir(parents=True, exist_ok=True)
        k = min(8, args.samples)
        labelled_grid([("teacher T(z)", list(ti[:k])), ("student S(z)", list(si[:k]))], cell=128,
                      label_width=120).save(args.pictures / "teacher_vs_student.png")
        report["style_mixing"] = [
            style_mixing(s, args.pictures / ("style_mixing.png" if i == 0 else f"style_mixing_cutoff{cutoff}.png"),
                         cutoff, args.seed) for i, cutoff in enumerate(args.cutoff)]
    write_report(args.out, report, markdown(report))
    return 0


def style_mixing(g, path: Path, cutoff: int, seed: int, n: int = 5) -> dict:
    """Rows A, columns B; cell = layers < cutoff from A, the rest from B (ψ 0.7, as StyleGAN's figures)."""
    g.require_layerwise("style mixing")
    rng = torch.Generator().manual_seed(seed + 1)
    codes = g.sample_codes(torch.randn(2 * n, g.z_dim, generator=rng), truncation_psi=0.7)
    a, b = codes[:n], codes[n:]
    with torch.no_grad():
        grid = mix(b, a, cutoff)  # [S = columns B, K = rows A, L, C]: A's layers < cutoff, B's from cutoff on
        cells = synthesize(g, grid.reshape(-1, *codes.shape[1:])).clamp(-1, 1).reshape(n, n, 3, g.resolution,
                                                                                       g.resolution)
        heads_a, heads_b = synthesize(g, a).clamp(-1, 1), synthesize(g, b).clamp(-1, 1)
    header = ["face A"] + [f"B{j + 1}" for j in range(n)]
    rows = [("B (fine layers)", [torch.ones_like(heads_a[0])] + list(heads_b))]
    rows += [(f"A{i + 1} (layers 0-{cutoff - 1})", [heads_a[i]] + [cells[j, i] for j in range(n)]) for i in range(n)]
    labelled_grid(rows, cell=128, label_width=150, header=header).save(path)
    return {"picture": path.name, "coarse_layers": f"0-{cutoff - 1}", "fine_layers": f"{cutoff}-{g.num_layers - 1}",
            "truncation_psi": 0.7}


def markdown(r: dict) -> str:
    m, u = r["student_vs_teacher"], r["teacher_vs_other_teacher_face"]
    lines = [f"# {r['student']} against its teacher {r['teacher']}", "", f"Machine: {r['machine']}", "",
             f"{r['samples']} fixed prior samples (seed {r['seed']}), both generators without truncation; per "
             f"sample, student S(z) against teacher T(z). For scale: teacher images of different z against "
             f"each other.", "",
             "| measure | mean | median | 10th pct | 90th pct | unrelated faces (mean) |", "|---|---|---|---|---|---|"]
    for key, name in (("lpips_alex", "LPIPS (AlexNet) ↓"), ("lpips_vgg", "LPIPS (VGG) ↓"), ("l1", "L1 ↓"),
                      ("psnr", "PSNR dB ↑")):
        v = m[key]
        ref = f"{u[key]['mean']:.3f}" if key in u else "–"
        lines.append(f"| {name} | {v['mean']:.3f} | {v['median']:.3f} | {v['p10']:.3f} | {v['p90']:.3f} | {ref} |")
    t = r.get("training")
    if t:
        lines += ["", f"Training: {t['images']:,} images (batch {t['batch_size']}) in {t['wall_hours']:.2f} h "
                      f"of wall time, median {t['median_img_per_s']:.1f} images/s; last logged losses "
                      + ", ".join(f"{k} {v:.3f}" for k, v in t["final_losses"].items()) + "."]
    for s in r.get("style_mixing") or []:
        lines += ["", f"Style mixing ({s['picture']}): layers {s['coarse_layers']} from the row face, "
                      f"{s['fine_layers']} from the column face, ψ {s['truncation_psi']}."]
    lines += ["", f"Command: `{r['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
