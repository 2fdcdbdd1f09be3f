"""``idinvert evaluate``: the paper's tables on one pack and one set of held-out real images.

Writes into ``--out``: ``results.json`` (every number), ``results.md`` (the tables),
``plots/*.png`` (bar charts, the λ_dom curve, edit curves, PR curves) and ``grids/*.png`` (example
reconstructions, interpolations, edits). Finished parts are cached in ``OUT/cache/`` as they
complete (codes as safetensors, numbers as JSON, each file written atomically); ``--resume``
reuses the ones whose pack, images and settings match, so an interrupted CPU run continues
where it stopped. The result files appear together, only when the run succeeds.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import numpy as np
import torch

from ..attributes import load_predictor
from ..errors import ConfigError
from ..evaluation.cache import FolderCache
from ..evaluation.imageset import load_image_set
from ..evaluation.outputs import figures, markdown
from ..evaluation.suite import METHOD_KINDS, SKIPPABLE, Evaluation, EvaluationConfig
from ..fileio import StagedOutput, atomic_path, check_output_dir, json_ready, write_json, write_text
from ..report import environment
from ..safety import check_seed, mark_output_dir
from .common import add_device, add_quiet, batch_size_of, info, open_pack, progress

CACHE_DIR = "cache"


def register(sub: argparse._SubParsersAction) -> None:
    d = EvaluationConfig()
    p = sub.add_parser("evaluate", help="reproduce the paper's tables (inversion, editing, λ_dom ablation, "
                                        "attributes) on held-out photos",
                       description="Run Table 1 (encoders, MSE-based optimisation, in-domain inversion: time, "
                                   "MSE, PSNR, SSIM, LPIPS, ID, FID, SWD), Table 2 (interpolation and manipulation "
                                   "FID/SWD), the λ_dom ablation (Fig. 9), edit quality along each boundary and "
                                   "attribute precision-recall from codes (Fig. 3) on the same images. Writes "
                                   "results.json, results.md, plots/ and grids/ into --out; parts are cached in "
                                   "OUT/cache and reused with --resume.")
    p._negative_number_matcher = re.compile(r"^-\.?\d")  # allow --edit-range -3,3,7
    p.add_argument("--pack", "--model", dest="model", default=None, metavar="PACK",
                   help="model pack folder (default: the bundled default pack)")
    p.add_argument("--images", nargs="+", required=True, metavar="DIR_OR_LIST_OR_PREPARED",
                   help="image folder(s), list file(s), one folder made by `idinvert prepare-data` "
                        "(its labels, if any, are the ground truth of Fig. 3), or one `idinvert invert` "
                        "output folder (its photos)")
    p.add_argument("--labels", type=Path, metavar="CSV",
                   help="labels CSV with a 'file' column (basenames) and attribute columns (0/1, age, gender)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--count", type=int, default=None, help="use the first N images (default: all)")
    p.add_argument("--spread", action="store_true",
                   help="with --count: take N images evenly spaced over the set instead of the first N "
                        "(a prepared set is sorted by file name, which for UTKFace means by age)")
    p.add_argument("--methods", nargs="+", choices=METHOD_KINDS, default=list(METHOD_KINDS), metavar="METHOD",
                   help=f"Table 1 methods, some of {' '.join(METHOD_KINDS)} (default: all the pack can run)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"in-domain inversion steps (default {d.steps})")
    p.add_argument("--steps-mse", default=",".join(map(str, d.steps_mse)), metavar="T1,T2",
                   help="MSE-based optimisation step counts, one Table 1 row each (default 100,1000)")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--lambda-dom", type=float, default=d.lambda_dom, help=f"λ_dom of Table 1 (default {d.lambda_dom:g})")
    p.add_argument("--lambda-dom-ablation", default=",".join(f"{v:g}" for v in d.lambda_dom_ablation),
                   metavar="L1,L2,...", help="λ_dom values of the ablation (default 0,2,40)")
    p.add_argument("--pairs", type=int, default=d.pairs, help=f"random pairs to interpolate (default {d.pairs})")
    p.add_argument("--edit-distance", type=float, default=d.edit_distance,
                   help=f"d of the manipulation column (edits at ±d) and of LEC (default {d.edit_distance:g})")
    p.add_argument("--lec-count", type=int, default=d.lec_count, metavar="N",
                   help=f"images of the LEC measure; each boundary and direction re-inverts them once per method "
                        f"(default {d.lec_count})")
    p.add_argument("--refine-steps", type=int, default=d.refine_steps, metavar="N",
                   help="add pivotal-tuning (PTI) rows: tune each image's generator for at most N steps around the "
                        "in-domain and the MSE pivots, and measure reconstruction and ±d edits (default 0 = none; "
                        "PTI uses 350; slow on a CPU)")
    p.add_argument("--refine-batch", type=int, default=d.refine_batch, metavar="N",
                   help=f"images tuned together in the PTI rows (default {d.refine_batch})")
    p.add_argument("--edit-range", default="-3,3,7", metavar="START,END,COUNT",
                   help="distances of the edit-quality sweep (default -3,3,7: -3, -2, …, 3)")
    p.add_argument("--boundaries", nargs="+", default=None, metavar="NAME",
                   help="the pack's boundaries to use (default: all)")
    p.add_argument("--directions", nargs="+", default=None, metavar="NAME",
                   help="the pack's label-free directions to measure, e.g. sefa_01 ganspace_01 (default: all)")
    p.add_argument("--skip", nargs="+", default=[], choices=SKIPPABLE, metavar="PART",
                   help="leave out metrics (fid swd lpips id) or parts (interpolation manipulation ablation "
                        "edits directions lec pr)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images inverted together (default: as for invert, 16 on a CPU for packs of 64 px or less, "
                        "else 1; 8 on a GPU)")
    p.add_argument("--metric-batch", type=int, default=d.metric_batch,
                   help=f"images per batch when measuring (default {d.metric_batch}; raise it on a GPU)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of random codes, pairs and SWD (default 0)")
    p.add_argument("--examples", type=int, default=d.examples, help=f"images in the example grids (default {d.examples})")
    p.add_argument("--resume", action="store_true", help="reuse the parts an earlier run cached in OUT/cache")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for PyTorch (default: PyTorch's choice; 1 is often fastest on a busy machine)")
    add_device(p)
    add_quiet(p)
    p.set_defaults(run=run)


def _numbers(text: str, option: str, kind=float) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers like 0,2,40; got {text!r}") from None
    if not values:
        raise ConfigError(f"{option} needs at least one value")
    return values


def edit_range(text: str) -> tuple[float, ...]:
    start, end, count = _numbers(text, "--edit-range")
    if count != int(count) or count < 2:
        raise ConfigError(f"--edit-range START,END,COUNT needs COUNT ≥ 2; got {text!r}")
    return tuple(float(v) for v in np.linspace(start, end, int(count)))


def evaluation_config(args: argparse.Namespace, batch_size: int) -> EvaluationConfig:
    return EvaluationConfig(
        methods=tuple(dict.fromkeys(args.methods)), steps=args.steps,
        steps_mse=_numbers(args.steps_mse, "--steps-mse", int),
        lr=args.lr, lambda_dom=args.lambda_dom,
        lambda_dom_ablation=_numbers(args.lambda_dom_ablation, "--lambda-dom-ablation"), pairs=args.pairs,
        edit_distance=args.edit_distance, edit_distances=edit_range(args.edit_range),
        boundaries=tuple(args.boundaries) if args.boundaries else None, skip=frozenset(args.skip),
        batch_size=batch_size, metric_batch=args.metric_batch, seed=args.seed, examples=args.examples,
        lec_count=args.lec_count, refine_steps=args.refine_steps, refine_batch=args.refine_batch)


# --- the verb ---------------------------------------------------------------------------------------

def command_line(args: argparse.Namespace, config: EvaluationConfig) -> str:
    """The command with every effective setting, to rerun the evaluation exactly."""
    parts = ["idinvert", "evaluate", "--pack", str(args.model or "default"), "--images", *map(str, args.images)]
    if args.labels:
        parts += ["--labels", str(args.labels)]
    parts += ["--out", str(args.out)]
    if args.count is not None:
        parts += ["--count", str(args.count)] + (["--spread"] if args.spread else [])
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    parts += ["--methods", *config.methods, "--steps", str(config.steps),
              "--steps-mse", ",".join(map(str, config.steps_mse)), "--lr", f"{config.lr:g}",
              "--lambda-dom", f"{config.lambda_dom:g}",
              "--lambda-dom-ablation", ",".join(f"{v:g}" for v in config.lambda_dom_ablation),
              "--pairs", str(config.pairs), "--edit-distance", f"{config.edit_distance:g}",
              "--lec-count", str(config.lec_count),
              f"--edit-range={args.edit_range}", "--batch-size", str(config.batch_size),
              "--metric-batch", str(config.metric_batch), "--seed", str(config.seed)]
    if config.boundaries:
        parts += ["--boundaries", *config.boundaries]
    if args.directions:
        parts += ["--directions", *args.directions]
    if config.skip:
        parts += ["--skip", *sorted(config.skip)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, inputs=[*args.images, args.labels, args.model])
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    check_seed(args.seed)
    pack = open_pack(args)
    config = evaluation_config(args, batch_size_of(args, pack))
    data = load_image_set(args.images, pack.resolution, args.count, args.labels, args.spread)
    boundaries = pack.boundaries(config.boundaries) if pack.config.get("boundaries") else {}
    if config.boundaries and not boundaries:
        raise ConfigError(f"--boundaries: the pack {pack.path} has no boundaries")
    directions = (pack.directions(args.directions) if config.uses("edits") and config.uses("directions")
                  else {})
    wants_predictor = (config.uses("edits") and (boundaries or directions)) or (config.uses("pr") and boundaries)
    predictor = load_predictor(pack) if pack.config.get("predictor") and wants_predictor else None
    info(args, f"evaluating {pack.name!r} on {data.images.shape[0]} images ({pack.resolution} px) on {pack.device}")
    args.out.mkdir(parents=True, exist_ok=True)  # the cache lives in it, so it is marked as ours now
    mark_output_dir(args.out)
    evaluation = Evaluation(pack, data.images, config, label_rows=data.rows, predictor=predictor,
                            boundaries=boundaries, directions=directions,
                            cache=FolderCache(args.out / CACHE_DIR, reuse=args.resume),
                            progress=lambda desc, total: progress(args, total, desc), log=lambda m: info(args, m))
    result = evaluation.run()
    result.results = {**result.results, "model": pack.identity(), "source": data.source,
                      "names": data.names, "command": command_line(args, config),
                      "environment": environment(pack.device)}
    with progress(args, 0, "figures"):
        pictures = figures(result, pack, data.images)
    with StagedOutput(args.out) as stage:
        write_json(stage.path / "results.json", json_ready(result.results))
        write_text(stage.path / "results.md", markdown(result.results))
        for name, picture in pictures.items():
            with atomic_path(stage.file(name)) as tmp:
                picture.save(tmp, format="PNG")
    info(args, f"evaluated {data.images.shape[0]} images → {args.out}/results.md")
    return 0
