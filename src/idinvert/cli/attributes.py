"""Attribute verbs: ``train-predictor``, ``train-boundary`` and ``attributes``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from ..attributes import boundary_sign, load_predictor, predictor_entry, predictor_output, save_predictor
from ..attributes.boundary import BoundaryConfig, train_boundary
from ..attributes.predictor import PredictorConfig
from ..attributes.train import PredictorTrainConfig, PredictorTrainer, evaluate_predictor
from ..boundaries import is_boundary_file, load_boundary, parse_layers, save_boundary
from ..datasets import ImageDataset
from ..engine.invert_folder import read_codes
from ..errors import ConfigError
from ..fileio import json_ready, write_json
from ..pack import update_pack
from ..parallel import init_distributed
from ..safety import claim_output_file
from ..training.runner import RunOptions, run_training
from .common import add_device, add_model, add_quiet, info, open_pack


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-predictor", help="train the face-attribute predictor on labelled photos",
                       description="Train on prepared, labelled sets (prepare-data --labels; CelebA aligned "
                                   "to the pack's framing with --align), evaluate on held-out sets, and "
                                   "optionally add the predictor to a pack.")
    p.add_argument("--data", nargs="+", required=True, type=Path, help="prepared training sets")
    p.add_argument("--test", nargs="*", default=[], type=Path, help="prepared held-out sets to report on")
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--pack", type=Path, help="add the trained predictor to this pack")
    d = PredictorTrainConfig()
    p.add_argument("--kimg", type=float, default=d.total_kimg)
    p.add_argument("--batch", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    add_quiet(p)
    p.set_defaults(run=run_train_predictor)

    p = sub.add_parser("train-boundary", help="fit an InterFaceGAN boundary in W+ with the pack's predictor")
    add_model(p)
    p.add_argument("--attribute", required=True, help="e.g. age, gender, smile, eyeglasses, or any predictor output")
    b = BoundaryConfig()
    p.add_argument("--samples", type=int, default=b.samples, help=f"codes to sample (default {b.samples})")
    p.add_argument("--codes", type=Path, metavar="INVERT_DIR",
                   help="fit on the codes of an `idinvert invert` output folder (inverted real photos) "
                        "instead of --samples sampled codes")
    p.add_argument("--keep", type=float, default=b.keep_fraction, help="fraction kept at each extreme")
    p.add_argument("--layers", default="auto", help="auto (layer-wise search) or a spec such as 0-5 or 2,3,4")
    p.add_argument("--search-samples", type=int, default=b.search_samples,
                   help=f"fresh codes for the layer-wise search (default {b.search_samples})")
    p.add_argument("--condition", nargs="*", default=[],
                   help="attributes (boundaries of the pack) to project out, e.g. --condition eyeglasses")
    p.add_argument("--out", type=Path, help="write the boundary here instead of adding it to the pack")
    p.add_argument("--seed", type=int, default=b.seed)
    add_device(p)
    add_quiet(p)
    p.set_defaults(run=run_train_boundary)

    p = sub.add_parser("attributes", help="list what a pack can edit")
    add_model(p)
    add_device(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_quiet(p)
    p.set_defaults(run=run_attributes)


def run_train_predictor(args: argparse.Namespace) -> int:
    world = init_distributed(args.device)
    train_sets = [ImageDataset(d) for d in args.data]
    resolution = train_sets[0].resolution
    if any(d.resolution != resolution for d in train_sets):
        raise ConfigError("all --data sets must be prepared at the same resolution")
    config = PredictorTrainConfig(predictor=PredictorConfig(resolution=resolution), total_kimg=args.kimg,
                                  batch_size=args.batch, lr=args.lr, seed=args.seed)
    trainer = PredictorTrainer(config, train_sets, world)
    record = {"kind": "predictor", "data": [str(d) for d in args.data], "total_kimg": args.kimg,
              "batch_size": args.batch, "lr": args.lr, "seed": args.seed}
    options = RunOptions(run_dir=args.run_dir, total_images=int(args.kimg * 1000), resume=args.resume,
                         snapshot_images=10**12, quiet=args.quiet)
    outcome = run_training(trainer, trainer.train_step, options, config=record, world=world)
    if not outcome.finished:
        info(args, "predictor training stopped with a checkpoint; continue with --resume")
        return outcome.exit_status  # 130 after Ctrl-C, 143 after SIGTERM
    model = trainer.model.eval()
    report = {"trained_on": [str(d) for d in args.data], "images_seen": outcome.images_seen,
              "seconds": round(outcome.seconds, 1)}
    if args.test:
        r = evaluate_predictor(model, [ImageDataset(t) for t in args.test])
        report |= {"test_sets": [str(t) for t in args.test], **dataclasses.asdict(r)}
    save_predictor(model, args.run_dir / "predictor.safetensors")
    write_json(args.run_dir / "report.json", json_ready(report))
    if args.pack:
        update_pack(args.pack, files={"attributes.safetensors": args.run_dir / "predictor.safetensors"},
                    config_updates={"predictor": predictor_entry(model, json_ready(report))})
    info(args, f"predictor trained ({outcome.images_seen} images); report: {args.run_dir / 'report.json'}")
    return 0


def run_train_boundary(args: argparse.Namespace) -> int:
    if args.out is not None:  # a new file, or a boundary written before; never an input or inside one
        claim_output_file(args.out, inputs=[args.codes, args.model], suffix=".npy", ours=is_boundary_file)
    pack = open_pack(args)
    predictor = load_predictor(pack)
    output = predictor_output(args.attribute, predictor)
    if args.layers != "auto":
        pack.generator.require_layerwise("--layers")
    layers = None if args.layers == "auto" else parse_layers(args.layers, pack.code_shape[0])
    conditions = {}
    for other in args.condition:
        known = pack.boundary_files()
        if other not in known:
            raise ConfigError(f"no boundary {other!r} in the pack to condition on; available: "
                              f"{', '.join(sorted(known)) or 'none'}")
        direction = load_boundary(pack.file(known[other]), pack.code_shape).direction
        conditions[other] = direction.expand(pack.code_shape).cpu().numpy()[None]
    config = BoundaryConfig(samples=args.samples, keep_fraction=args.keep, seed=args.seed,
                            search_samples=args.search_samples)
    codes = None
    if args.codes is not None:
        codes = read_codes(args.codes, pack)[2].to(pack.device)
        if codes.shape[0] < 4:
            raise ConfigError(f"--codes {args.codes}: {codes.shape[0]} codes; a boundary needs at least 4")
    what = f"the {codes.shape[0]} codes of {args.codes}" if codes is not None else f"{args.samples} sampled codes"
    info(args, f"scoring {output!r} on {what} …")
    result = train_boundary(pack.generator, predictor, output, config, layers=layers, conditions=conditions,
                            codes=codes, progress=lambda stage: info(args, stage))
    boundary = boundary_sign(args.attribute) * result.boundary
    meta = result.meta_data() | {"name": args.attribute, "predictor_output": output}
    if args.out:
        save_boundary(args.out, boundary, layers=result.manipulate_layers, meta=meta)
        where = args.out
    else:
        relative = f"boundaries/{args.attribute}.npy"
        with tempfile.TemporaryDirectory() as tmp:
            path = save_boundary(Path(tmp) / "b.npy", boundary, layers=result.manipulate_layers, meta=meta)
            update_pack(pack.path, files={relative: path}, config_updates={"boundaries": {args.attribute: relative}})
        where = pack.path / relative
    acc = np.nanmean(result.svm_accuracy)
    info(args, f"{args.attribute}: layers {result.manipulate_layers}, mean SVM validation accuracy {acc:.3f} → {where}")
    return 0


def run_attributes(args: argparse.Namespace) -> int:
    pack = open_pack(args)
    rows = []
    for name, relative in sorted(pack.boundary_files().items()):
        b = load_boundary(pack.file(relative), pack.code_shape)
        rows.append({"name": name, "file": relative, "layers": list(b.layers or range(pack.code_shape[0]))})
    if args.json:
        print(json.dumps({"pack": pack.name, "attributes": rows}, indent=2))
        return 0
    if not rows:
        print(f"pack {pack.name!r} has no boundaries (add some with `idinvert train-boundary`)")
        return 0
    print(f"pack {pack.name!r} can edit:")
    for r in rows:
        print(f"  {r['name']:<14} layers {r['layers']}")
    return 0

