"""``--refine pti``: pivotal tuning on the command line, and tuned generators in invert folders.

An invert folder with tuned generators holds, besides the usual files, for each tuned image
``<name>_tuned.safetensors`` (its non-zero weight deltas, float16) and ``<name>_pti.png`` (its
reconstruction by the tuned generator), and a ``refine`` entry in ``manifest.json``::

    "refine": {"method": "pti", "settings": {...}, "base": "<generator fingerprint>",
               "files": {"<name>": "<name>_tuned.safetensors" | null}, "per_image": [{steps, mse/lpips
               before/after}], "seconds": ..., "seconds_per_image": ..., "dtype": "float16"}

``read_invert_dir`` loads them (``Inverted.tuned``), so every verb that reads the folder renders
each image through its own tuned generator.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..fileio import atomic_path, write_json
from ..images import read_image, read_images, save_image
from ..engine.refine import REFINE_METHODS, RefineConfig, RefineResult, refine
from ..report import Report, write_html, write_sheet
from ..engine.tuned import TunedWeights, load_tuned, save_tuned, synthesize_tuned
from .common import info, progress

MAX_REFINE_STEPS = 100_000  # PTI uses 350
REFINE_BATCH = 8  # images tuned together by default: 1.7× faster per image than one at a time on a CPU
SHEET_ROWS = 64  # rows of sheet.png (index.html lists every image)


def add_refine_options(p: argparse.ArgumentParser) -> None:
    d = RefineConfig()
    p.add_argument("--refine", choices=REFINE_METHODS, default=None,
                   help="after inverting, tune a copy of the generator per image for a faithful reconstruction "
                        "(pti: pivotal tuning; the codes stay as inverted; slow: about 0.3-0.5 s per step and "
                        "image on a CPU for the 64 px pack)")
    p.add_argument("--refine-steps", type=int, default=d.steps,
                   help=f"at most this many tuning steps per image (default {d.steps}; an image stops early once "
                        f"its LPIPS is ≤ {d.lpips_threshold})")


def refine_config_of(args: argparse.Namespace) -> RefineConfig | None:
    if getattr(args, "refine", None) is None:
        return None
    steps = args.refine_steps
    if not isinstance(steps, int) or not 0 <= steps <= MAX_REFINE_STEPS:
        raise ConfigError(f"--refine-steps must be an integer from 0 to {MAX_REFINE_STEPS}; got {steps}")
    return RefineConfig(method=args.refine, steps=steps)


def run_refinement(args: argparse.Namespace, pack, images: torch.Tensor, codes: torch.Tensor,
                   config: RefineConfig, batch_size: int) -> RefineResult:
    """``refine`` with its own progress bar (steps of all batches) and a one-line summary."""
    n = images.shape[0]
    batches = -(-n // batch_size)
    with progress(args, batches * config.steps, "pivotal tuning") as bar:
        result = refine(images, codes, pack, config, batch_size=batch_size,
                        callback=lambda b, s, losses: bar.update(1))
    before, after = result.before["lpips"].mean(), result.after["lpips"].mean()
    info(args, f"tuned {n} generator(s) in {result.seconds:.1f} s ({result.seconds / max(n, 1):.1f} s per image): "
               f"LPIPS {before:.3f} → {after:.3f}")
    return result


def write_refinement(folder: Path, names: list[str], result: RefineResult, *, images: bool = True) -> dict:
    """``<name>_tuned.safetensors`` and (``images``) ``<name>_pti.png`` per image; returns the manifest entry."""
    files: dict[str, str | None] = {}
    changed = result.tuned.changed().tolist()
    for i, name in enumerate(names):
        if images:
            save_image(result.reconstructions[i], folder / f"{name}_pti.png")
        files[name] = None
        if changed[i]:
            with atomic_path(folder / f"{name}_tuned.safetensors") as tmp:
                save_tuned(tmp, {k: v[i] for k, v in result.tuned.deltas.items()}, base=result.base)
            files[name] = f"{name}_tuned.safetensors"
    n = len(names)
    return {"method": result.config.method, "settings": asdict(result.config), "base": result.base,
            "files": files, "dtype": "float16", "per_image": result.report(),
            "seconds": round(result.seconds, 3), "seconds_per_image": round(result.seconds / max(n, 1), 3)}


def refine_invert_dir(args: argparse.Namespace, folder: Path, pack, config: RefineConfig, batch_size: int) -> None:
    """Tune the generators of a finished invert folder in place: the tuned files and PNGs first, then
    the manifest that names them (atomically), then index.html and sheet.png with the new column."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    names = manifest["names"]
    previous = manifest.get("refine")
    if previous and previous.get("settings") == asdict(config) and previous.get("base"):
        info(args, f"{folder}: the generators are already tuned with these settings")
        return
    codes = torch.from_numpy(np.load(folder / "codes.npy", allow_pickle=False)).float()
    originals = [folder / f"{n}_ori.png" for n in names]
    if all(p.is_file() for p in originals):  # what was inverted (at the model's resolution)
        images = torch.stack([read_image(p, pack.resolution) for p in originals])
    else:  # --no-images: the inputs again
        images = read_images([Path(p) for p in manifest["inputs"]], pack.resolution)
    result = run_refinement(args, pack, images, codes, config, batch_size)
    manifest["refine"] = write_refinement(folder, names, result, images=manifest.get("images", True))
    write_json(folder / "manifest.json", manifest)
    if (folder / "index.html").is_file():
        report = Report(title="Inversion", headers=["Original", "Encoder output", "Inversion", "Inversion + PTI"])
        for name in names:
            enc = f"{name}_enc.png" if (folder / f"{name}_enc.png").is_file() else ""
            report.add_row(name, [f"{name}_ori.png", enc, f"{name}_inv.png", f"{name}_pti.png"])
        write_html(report, folder)
        write_sheet(Report(report.title, report.headers, report.rows[:SHEET_ROWS], report.row_names[:SHEET_ROWS]),
                    folder)


def folder_tuning(folder: Path, manifest: dict, pack) -> TunedWeights | None:
    """The tuned generators an invert folder's manifest lists (``None`` when it lists none)."""
    entry = manifest.get("refine")
    if not entry:
        return None
    files = entry.get("files") if isinstance(entry, dict) else None
    names = manifest["names"]
    if not isinstance(files, dict) or any(not (f is None or isinstance(f, str)) for f in files.values()):
        raise ConfigError(f"{folder}/manifest.json: 'refine.files' must map image names to files; "
                          f"run `idinvert invert --refine pti` again")
    paths = []
    for name in names:
        relative = files.get(name)
        if relative is not None and (Path(relative).name != relative or not relative.endswith(".safetensors")):
            raise ConfigError(f"{folder}/manifest.json lists {relative!r} as tuned weights: expected a "
                              f".safetensors file inside the folder")
        paths.append(folder / relative if relative else None)
    if all(p is None for p in paths):
        return None
    return load_tuned(paths, pack.generator).to(pack.device)


def refine_missing(args: argparse.Namespace, pack, inverted) -> dict:
    """With --refine, tune the generators of inputs that have none yet (photos inverted on the spot or
    an untuned invert folder), setting ``inverted.tuned``; returns the manifest entries to add."""
    config = refine_config_of(args)
    if config is None or inverted.tuned is not None:
        return {}
    result = run_refinement(args, pack, inverted.originals, inverted.codes, config, REFINE_BATCH)
    inverted.tuned = result.tuned
    n = len(inverted.names)
    return {"refine": {"method": config.method, "settings": asdict(config), "per_image": result.report(),
                       "seconds": round(result.seconds, 3), "seconds_per_image": round(result.seconds / max(n, 1), 3)}}


def render_interpolation(args: argparse.Namespace, pack, codes: torch.Tensor, weights: torch.Tensor,
                         src: TunedWeights | None, dst: TunedWeights | None) -> torch.Tensor:
    """Images ``[N, M, S, 3, R, R]`` of interpolated codes ``[N, M, S, L, C]`` at ``weights`` ``[S]``.

    With tuned generators the weights are interpolated too: pair (i, j) at t renders with
    θ + Δ_i + t·(Δ_j − Δ_i), so both ends reproduce their photos' faithful reconstructions (an
    untuned side has Δ = 0). Tuning moves a generator only slightly from the pack's, and straight
    lines between small changes of one network stay in its basin; keeping one end's generator
    instead would render the other end as a different face than its own reconstruction."""
    from .edit import render

    if src is None and dst is None:
        return render(args, pack, codes, "interpolating")
    n, m, s = codes.shape[:3]
    src = src or TunedWeights.zeros(pack.generator, n, list(dst.deltas))
    dst = dst or TunedWeights.zeros(pack.generator, m, list(src.deltas))
    rows = []
    with progress(args, n * m * s, "interpolating") as bar:
        for i in range(n):
            for j in range(m):
                a = src.select([i] * s)
                tuned = a.lerp(dst.select([j] * s), weights)
                rows.append(synthesize_tuned(pack.generator, tuned, codes[i, j, :, None], callback=bar.update)[:, 0])
    return torch.stack(rows).reshape(n, m, s, *rows[0].shape[1:]).cpu()
