"""``--refine pti`` on the command line: the options, pivotal tuning with a progress bar, and rendering
an interpolation through tuned generators. Invert folders with tuned generators are
``engine.invert_folder``'s (``tune_folder`` writes them, ``read_folder`` loads them)."""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from ..engine.invert_folder import Inverted, tuning_entry
from ..engine.refine import REFINE_METHODS, RefineConfig, RefineResult, pack_refine_config, refine
from ..engine.tuned import TunedWeights, synthesize_tuned, tuned_between
from ..errors import ConfigError
from ..pack import ModelPack
from .common import info, progress, render

MAX_REFINE_STEPS = 100_000  # PTI uses 350
REFINE_BATCH = 8  # images tuned together by default: 1.7× faster per image than one at a time on a CPU


def add_refine_options(p: argparse.ArgumentParser) -> None:
    d = RefineConfig()
    p.add_argument("--refine", choices=REFINE_METHODS, default=None,
                   help="after inverting, tune a copy of the generator per image for a faithful reconstruction "
                        "(pti: pivotal tuning; the codes stay as inverted; slow: about 0.3-0.5 s per step and "
                        "image on a CPU for the 64 px pack)")
    p.add_argument("--refine-steps", type=int, default=d.steps,
                   help=f"at most this many tuning steps per image (default {d.steps}; an image stops early once "
                        f"its LPIPS is ≤ {d.lpips_threshold})")


def refine_config_of(args: argparse.Namespace, pack: ModelPack | None = None) -> RefineConfig | None:
    """--refine's settings: PTI's, with ``pack``'s own tuning defaults (e.g. which layers it tunes) when given,
    and --refine-steps on top."""
    if getattr(args, "refine", None) is None:
        return None
    steps = args.refine_steps
    if not isinstance(steps, int) or not 0 <= steps <= MAX_REFINE_STEPS:
        raise ConfigError(f"--refine-steps must be an integer from 0 to {MAX_REFINE_STEPS}; got {steps}")
    if pack is not None:
        return replace(pack_refine_config(pack, steps=steps), method=args.refine)
    return RefineConfig(method=args.refine, steps=steps)


def run_refinement(args: argparse.Namespace, pack: ModelPack, images: torch.Tensor, codes: torch.Tensor,
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


def refine_missing(args: argparse.Namespace, pack: ModelPack, inverted: Inverted) -> dict:
    """With --refine, tune the generators of inputs that have none yet (photos inverted on the spot or
    an untuned invert folder), setting ``inverted.tuned``; returns the manifest entries to add."""
    config = refine_config_of(args, pack)
    if config is None or inverted.tuned is not None:
        return {}
    result = run_refinement(args, pack, inverted.originals, inverted.codes, config, REFINE_BATCH)
    inverted.tuned = result.tuned
    return {"refine": tuning_entry(result)}


def render_interpolation(args: argparse.Namespace, pack: ModelPack, codes: torch.Tensor, weights: torch.Tensor,
                         src: TunedWeights | None, dst: TunedWeights | None) -> torch.Tensor:
    """Images ``[N, M, S, 3, R, R]`` of interpolated codes ``[N, M, S, L, C]`` at ``weights`` ``[S]``.

    With tuned generators the weights are interpolated too (``engine.tuned.tuned_between``): pair (i, j)
    at t renders with θ + Δ_i + t·(Δ_j − Δ_i)."""
    if src is None and dst is None:
        return render(args, pack, codes, "interpolating")
    n, m, s = codes.shape[:3]
    rows = []
    with progress(args, n * m * s, "interpolating") as bar:
        for i in range(n):
            for j in range(m):
                tuned = tuned_between(pack.generator, src.select([i]) if src is not None else None,
                                      dst.select([j]) if dst is not None else None, weights)
                rows.append(synthesize_tuned(pack.generator, tuned, codes[i, j, :, None], callback=bar.update)[:, 0])
    return torch.stack(rows).reshape(n, m, s, *rows[0].shape[1:]).cpu()
