"""``idinvert interpolate``, ``mix`` and ``diffuse``: the other applications of the paper
(official ``interpolate.py``, ``mix_style.py`` and ``diffuse.py``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ..engine.diffusion import CENTER_X, CENTER_Y, CROP_SIZE, REFERENCE_RESOLUTION, DiffusionResult, crop_box, diffuse
from ..engine.editing import default_mix_layer_start, interpolate, mix
from ..engine.inversion import MAX_STEPS, MAX_WEIGHT, InversionConfig
from ..errors import ConfigError, NonFiniteError
from ..fileio import StagedOutput, check_output_dir
from ..images import expand_inputs, read_images, save_image, unique_names
from ..pack import ModelPack
from ..report import Report, environment, write_outputs
from ..safety import check_float, check_int
from .common import (add_device, add_model, add_quiet, batch_size_of, check_lr, codes_from_inputs, info, open_pack,
                     progress, render)
from .refining import render_interpolation

INPUT_HELP = "an invert output folder, or images / a folder / a list file (inverted first with the default settings)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("interpolate", help="interpolate between inverted photos in W+",
                       description="For every (source, target) pair, the codes src + l·(dst − src) for "
                                   "l = linspace(0, 1, STEPS + 2), in all layers. Writes src_<name>_{ori,inv}.png, "
                                   "dst_<name>_{ori,inv}.png, <src>_TO_<dst>_KK.png, codes.npy "
                                   "[N, M, STEPS + 2, L, C], manifest.json, sheet.png and index.html into --out.")
    p.add_argument("source", metavar="SRC_INVERT_DIR", help=INPUT_HELP)
    p.add_argument("target", metavar="DST_INVERT_DIR", help=INPUT_HELP)
    p.add_argument("--steps", type=int, default=5, help="intermediate codes between the endpoints (default 5)")
    _add_common(p, run_interpolate)

    p = sub.add_parser("mix", help="style mixing: fine layers from one photo, coarse layers from another",
                       description="Each content code with its layers ≥ K taken from each style code. Writes "
                                   "style_<name>_ori.png, content_<name>_ori.png, <style>_STYLIZE_<content>.png, "
                                   "codes.npy [styles, contents, L, C], manifest.json, sheet.png and index.html "
                                   "into --out.")
    p.add_argument("style", metavar="STYLE_INVERT_DIR", help=INPUT_HELP)
    p.add_argument("content", metavar="CONTENT_INVERT_DIR", help=INPUT_HELP)
    p.add_argument("--layer-start", type=int, default=None, metavar="K",
                   help="first layer taken from the style (default 10 for 14-layer models, the same "
                        "fraction of the depth for others)")
    _add_common(p, run_mix)

    d = InversionConfig()
    p = sub.add_parser("diffuse", help="semantic diffusion: blend a target's face patch into context photos",
                       description="Paste a square of each target into each context, start from E(stitched) and "
                                   "optimise the code on the square only (masked pixel + VGG loss, no domain "
                                   "term), so the generator re-synthesises the rest. Writes target_<t>.png, "
                                   "context_<c>.png, <t>_TO_<c>{_stitched,_enc,}.png, codes.npy "
                                   "[targets, contexts, L, C], encoder_codes.npy, manifest.json, sheet.png and "
                                   "index.html into --out.")
    p.add_argument("--target", nargs="+", required=True, metavar="IMAGE", help="target images, folders or lists")
    p.add_argument("--context", nargs="+", required=True, metavar="IMAGE", help="context images, folders or lists")
    scale = f"at {REFERENCE_RESOLUTION} px, scaled to the model's resolution"
    p.add_argument("--crop-size", type=int, default=None,
                   help=f"side of the pasted square (default {CROP_SIZE} {scale})")
    p.add_argument("--center-x", type=int, default=None, help=f"its centre column (default {CENTER_X} {scale})")
    p.add_argument("--center-y", type=int, default=None, help=f"its centre row (default {CENTER_Y} {scale})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimisation steps (default {d.steps})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--lambda-vgg", type=float, default=None, help="λ_vgg (default: the pack's calibrated value)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="pairs optimised together (default: as for invert, 16 on a CPU for packs of 64 px or less, "
                        "else 1; 8 on a GPU; results do not depend on it)")
    _add_common(p, run_diffuse)


def _add_common(p: argparse.ArgumentParser, run) -> None:
    add_model(p)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    add_device(p)
    add_quiet(p)
    p.set_defaults(run=run)


MAX_INTERPOLATION_STEPS = 1000  # codes between the endpoints (each one image per pair)


def run_interpolate(args: argparse.Namespace) -> int:
    check_int(args.steps, "--steps", 0, MAX_INTERPOLATION_STEPS, hint="codes between the endpoints")
    check_output_dir(args.out, inputs=[args.source, args.target, args.model])
    pack = open_pack(args)
    src = codes_from_inputs(args, pack, [args.source])
    dst = codes_from_inputs(args, pack, [args.target])
    began = time.perf_counter()
    codes = interpolate(src.codes, dst.codes, steps=args.steps)  # [N, M, steps + 2, L, C]
    weights = torch.linspace(0, 1, args.steps + 2)[1:-1]
    middle = render_interpolation(args, pack, codes[:, :, 1:-1], weights, src.tuned, dst.tuned)  # [N, M, steps, ...]
    src_inv = render(args, pack, src.codes, "sources", src.tuned)
    dst_inv = render(args, pack, dst.codes, "targets", dst.tuned)
    headers = ["Source", "Source Inversion"] + [f"Step {k + 1:02d}" for k in range(args.steps)] + \
        ["Target Inversion", "Target"]
    report = Report(title="Interpolation", headers=headers)
    with StagedOutput(args.out) as stage:
        np.save(stage.path / "codes.npy", codes.float().cpu().numpy())
        for prefix, side, inv in (("src", src, src_inv), ("dst", dst, dst_inv)):
            for i, name in enumerate(side.names):
                save_image(side.originals[i], stage.path / f"{prefix}_{name}_ori.png")
                save_image(inv[i], stage.path / f"{prefix}_{name}_inv.png")
        for i, a in enumerate(src.names):
            for j, b in enumerate(dst.names):
                steps = [f"{a}_TO_{b}_{k + 1:02d}.png" for k in range(args.steps)]
                for k, filename in enumerate(steps):
                    save_image(middle[i, j, k], stage.path / filename)
                report.add_row(f"{a}_TO_{b}", [f"src_{a}_ori.png", f"src_{a}_inv.png", *steps,
                                               f"dst_{b}_inv.png", f"dst_{b}_ori.png"])
        manifest = {
            "verb": "interpolate", "sources": src.names, "targets": dst.names,
            "inputs": {"source": src.source, "target": dst.source}, "model": pack.identity(),
            "steps": args.steps, "weights": np.linspace(0, 1, args.steps + 2).tolist(),
            "code_shape": list(codes.shape), "seconds": round(time.perf_counter() - began, 3),
            "environment": environment(pack.device),
            # tuned generators: the weights are interpolated with the codes (engine.tuned.tuned_between)
            "tuned_generators": {"source": src.tuned is not None, "target": dst.tuned is not None},
        }
        write_outputs(stage.path, report, manifest)
    info(args, f"interpolated {len(src.names)}×{len(dst.names)} pair(s) → {args.out}/index.html")
    return 0


def run_mix(args: argparse.Namespace) -> int:
    check_output_dir(args.out, inputs=[args.style, args.content, args.model])
    pack = open_pack(args)
    pack.generator.require_layerwise("style mixing")
    num_layers = pack.code_shape[0]
    k = default_mix_layer_start(num_layers) if args.layer_start is None else args.layer_start
    if not 0 <= k <= num_layers:
        raise ConfigError(f"--layer-start {k} is outside 0-{num_layers} for this {num_layers}-layer model")
    style = codes_from_inputs(args, pack, [args.style])
    content = codes_from_inputs(args, pack, [args.content])
    began = time.perf_counter()
    codes = mix(style.codes, content.codes, k)  # [S, K, L, C]
    # Each result is drawn by its content photo's generator (tuned or not): the content gives the face.
    images = render(args, pack, codes.transpose(0, 1), "mixing", content.tuned).transpose(0, 1)
    report = Report(title=f"Style mixing (layers {k}-{num_layers - 1} from the style)",
                    headers=["Style"] + [f"Content {j:03d}" for j in range(len(content.names))])
    with StagedOutput(args.out) as stage:
        np.save(stage.path / "codes.npy", codes.float().cpu().numpy())
        for j, c in enumerate(content.names):
            save_image(content.originals[j], stage.path / f"content_{c}_ori.png")
        report.add_row("content", [""] + [f"content_{c}_ori.png" for c in content.names])
        for i, s in enumerate(style.names):
            save_image(style.originals[i], stage.path / f"style_{s}_ori.png")
            cells = [f"style_{s}_ori.png"]
            for j, c in enumerate(content.names):
                save_image(images[i, j], stage.path / f"{s}_STYLIZE_{c}.png")
                cells.append(f"{s}_STYLIZE_{c}.png")
            report.add_row(s, cells)
        manifest = {
            "verb": "mix", "styles": style.names, "contents": content.names,
            "inputs": {"style": style.source, "content": content.source}, "model": pack.identity(),
            "layer_start": k, "code_shape": list(codes.shape),
            "seconds": round(time.perf_counter() - began, 3), "environment": environment(pack.device),
            "tuned_generators": {"content": content.tuned is not None, "style": False},
        }
        write_outputs(stage.path, report, manifest)
    info(args, f"mixed {len(style.names)} style(s) × {len(content.names)} content(s) → {args.out}/index.html")
    return 0


def run_diffuse(args: argparse.Namespace) -> int:
    check_int(args.steps, "--steps", 0, MAX_STEPS)
    if args.lambda_vgg is not None:
        check_float(args.lambda_vgg, "--lambda-vgg", 0.0, MAX_WEIGHT, hint="a loss weight")
    target_paths, context_paths = expand_inputs(args.target), expand_inputs(args.context)
    check_output_dir(args.out, inputs=[*args.target, *args.context, *target_paths, *context_paths, args.model])
    pack = open_pack(args)
    crop_box(pack.resolution, crop_size=args.crop_size, center_x=args.center_x, center_y=args.center_y)  # fits?
    batch_size = batch_size_of(args, pack)
    InversionConfig(steps=args.steps, lr=check_lr(args.lr), lambda_vgg=args.lambda_vgg)  # checks the values
    targets = read_images(target_paths, pack.resolution)
    contexts = read_images(context_paths, pack.resolution)
    result = _diffuse(args, pack, targets, contexts, batch_size, [*target_paths, *context_paths])
    with StagedOutput(args.out) as stage:
        _write_diffusion(stage.path, args, pack, result, target_paths, context_paths, targets, contexts, batch_size)
    info(args, f"diffused {len(target_paths)} target(s) into {len(context_paths)} context(s) in "
               f"{result.seconds:.1f} s → {args.out}/index.html")
    return 0


def _diffuse(args: argparse.Namespace, pack: ModelPack, targets: torch.Tensor, contexts: torch.Tensor,
             batch_size: int, files: list[Path]) -> DiffusionResult:
    """``diffuse`` with a progress bar, and a NaN explained in terms of the files and options."""
    pairs = targets.shape[0] * contexts.shape[0]
    last_step = [0]  # the step the current batch last finished

    def on_step(batch: int, step: int, losses) -> None:
        last_step[0] = step
        bar.update(1)

    with progress(args, -(-pairs // batch_size) * args.steps, "diffusion") as bar:
        try:
            return diffuse(targets, contexts, pack, crop_size=args.crop_size, center_x=args.center_x,
                           center_y=args.center_y, steps=args.steps, lr=args.lr, lambda_vgg=args.lambda_vgg,
                           batch_size=batch_size, callback=on_step)
        except NonFiniteError as exc:
            named = ", ".join(map(str, files[:3])) + (" …" if len(files) > 3 else "")
            if last_step[0] in (0, args.steps):  # at a batch's first step, before any update of the codes
                raise NonFiniteError(f"diffusing {named}: the loss is NaN/inf before the first update (the "
                                     f"model pack {pack.path} or λ_vgg is at fault); rebuild the pack or use a "
                                     f"smaller --lambda-vgg") from None
            raise NonFiniteError(f"diffusing {named}: {exc}") from None


def _write_diffusion(folder: Path, args: argparse.Namespace, pack: ModelPack, result: DiffusionResult,
                     target_paths: list[Path], context_paths: list[Path], targets: torch.Tensor,
                     contexts: torch.Tensor, batch_size: int) -> None:
    t_names, c_names = unique_names(target_paths), unique_names(context_paths)
    np.save(folder / "codes.npy", result.codes.float().cpu().numpy())
    np.save(folder / "encoder_codes.npy", result.encoder_codes.float().cpu().numpy())
    for i, t in enumerate(t_names):
        save_image(targets[i], folder / f"target_{t}.png")
    for j, c in enumerate(c_names):
        save_image(contexts[j], folder / f"context_{c}.png")
    headers = ["Target Image", "Context Image", "Stitched Image", "Encoder Output", f"Step {args.steps:03d}"]
    report = Report(title="Semantic diffusion", headers=headers)
    final = {k: v[-1] for k, v in result.losses.items()}  # term → [T, K]
    losses = []
    for i, t in enumerate(t_names):
        for j, c in enumerate(c_names):
            pair = f"{t}_TO_{c}"
            save_image(result.stitched[i, j], folder / f"{pair}_stitched.png")
            save_image(result.encoder_images[i, j], folder / f"{pair}_enc.png")
            save_image(result.images[i, j], folder / f"{pair}.png")
            report.add_row(pair, [f"target_{t}.png", f"context_{c}.png", f"{pair}_stitched.png",
                                  f"{pair}_enc.png", f"{pair}.png"])
            losses.append({"pair": pair, **{k: float(v[i, j]) for k, v in final.items()}})
    box = result.box
    lambda_vgg = pack.lambda_vgg(args.lambda_vgg)
    manifest = {
        "verb": "diffuse", "targets": t_names, "contexts": c_names,
        "inputs": {"target": [str(p) for p in target_paths], "context": [str(p) for p in context_paths]},
        "model": pack.identity(),
        "crop": {"top": box.top, "left": box.left, "size": box.size,
                 "rows": [box.top, box.top + box.size - 1], "cols": [box.left, box.left + box.size - 1]},
        "settings": {"steps": args.steps, "lr": args.lr, "lambda_vgg": lambda_vgg, "lambda_dom": 0.0,
                     "batch_size": batch_size},
        "losses": losses, "code_shape": list(result.codes.shape), "seconds": round(result.seconds, 3),
        "environment": environment(pack.device),
    }
    write_outputs(folder, report, manifest)
