"""Training runs end to end: data → trainer → checkpoints → model pack.

Each run folder records its kind and settings in ``train_config.json``; ``export_run`` turns
the latest checkpoint of any run (finished or not) into a model pack, so a long run can be
used before it ends.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from ..datasets import ImageDataset, ImageDatasets
from ..errors import CheckpointError
from ..fileio import json_ready
from ..images import make_grid, save_image
from ..networks import GENERATOR_KINDS, Discriminator, StyleGAN2Discriminator, StyleGAN2Generator
from ..networks.config import DiscriminatorConfig, EncoderConfig, GeneratorConfig, from_dict
from ..pack import ModelPack, copy_pack, load_pack, save_pack
from ..parallel import Distributed
from ..perceptual import default_perceptual_config
from ..safety import read_json
from .common import load_checkpoint, restore_trainer
from .data import BatchSampler, load_batch
from .distill import STUDENT_ARCHS, DistillConfig, DistillTrainer
from .encoder import ConventionalTrainer, EncoderTrainConfig, EncoderTrainer
from .gan import GANTrainConfig, GANTrainer, train_gan
from .gan2 import RUN_KIND as GAN2_RUN_KIND, export_gan2
from .runner import RunOptions, RunOutcome, run_training


def gan_config_from_dict(data: dict) -> GANTrainConfig:
    data = dict(data)
    data["generator"] = from_dict(GeneratorConfig, data["generator"])
    data["discriminator"] = from_dict(DiscriminatorConfig, data["discriminator"])
    data["minibatch_by_resolution"] = tuple(tuple(p) for p in data.get("minibatch_by_resolution", ()))
    return GANTrainConfig(**data)


def encoder_config_from_dict(data: dict) -> EncoderTrainConfig:
    data = dict(data)
    data["encoder"] = from_dict(EncoderConfig, data["encoder"])
    return EncoderTrainConfig(**data)


def save_gan_pack(trainer: GANTrainer, folder: Path, *, name: str, card: str | None = None) -> Path:
    """The EMA generator (lod 0) and the discriminator as a pack (no encoder yet)."""
    generator = copy.deepcopy(trainer.Gs).cpu()
    with torch.no_grad():
        generator.synthesis.lod.zero_()
    return save_pack(folder, name=name, generator=generator, discriminator=copy.deepcopy(trainer.D).cpu().eval(),
                     perceptual_config=default_perceptual_config("torchvision"), card=card, overwrite=True)


def run_gan(config: GANTrainConfig, data_dir: Path, options: RunOptions, *, world: Distributed,
            name: str = "gan") -> RunOutcome:
    dataset = ImageDataset(data_dir)
    record = {"kind": "gan", "data": str(data_dir), **json_ready(_asdict(config))}
    trainer, outcome = train_gan(config, dataset, options, world=world, config_dict=record)
    if outcome.finished and world.is_main:
        save_gan_pack(trainer, options.run_dir / "pack", name=name)
    return outcome


def _asdict(config) -> dict:
    return dataclasses.asdict(config)


def _data_record(data_dir: Path | list[Path] | None) -> str | list[str] | None:
    """How a run records its data: one folder as a string (as before), several as a list."""
    if isinstance(data_dir, list):
        return str(data_dir[0]) if len(data_dir) == 1 else [str(d) for d in data_dir]
    return str(data_dir) if data_dir else None


def run_encoder(config: EncoderTrainConfig, pack_dir: Path, data_dir: Path | list[Path] | None,
                options: RunOptions, *, world: Distributed, name: str | None = None) -> RunOutcome:
    """Train the domain-guided (needs data and a pack with D) or conventional encoder of a pack; ``data_dir``
    may list several prepared folders, read as one."""
    pack = load_pack(pack_dir, device=world.device, with_discriminator=True)
    if isinstance(data_dir, list) and len(data_dir) == 1:
        data_dir = data_dir[0]
    record = {"kind": config.kind, "pack": str(pack_dir), "data": _data_record(data_dir),
              **json_ready(_asdict(config))}
    trainer, step, snapshot = _encoder_run_parts(config, pack, data_dir, world)
    outcome = run_training(trainer, step, options, config=record, world=world, snapshot=snapshot)
    if outcome.finished and world.is_main:
        save_encoder_pack(trainer, pack, options.run_dir / "pack", name=name or pack.name)
    return outcome


def real_photos(data_dir: Path | list[Path] | None, resolution: int, why: str) -> ImageDataset | ImageDatasets:
    """The prepared photos a run trains on (one folder, or several read as one), refused in one line when
    missing or at another resolution."""
    if data_dir is None or (isinstance(data_dir, list) and not data_dir):
        raise CheckpointError(f"{why}: pass --data")
    dataset = ImageDatasets(data_dir) if isinstance(data_dir, list) else ImageDataset(data_dir)
    if dataset.resolution != resolution:
        raise CheckpointError(f"{data_dir} is prepared at {dataset.resolution}px, the generator makes "
                              f"{resolution}px images; prepare the data at {resolution}")
    return dataset


def _encoder_run_parts(config: EncoderTrainConfig, pack: ModelPack, data_dir: Path | None, world: Distributed):
    _check_encoder_fits(config.encoder, pack)
    if config.kind == "conventional":
        trainer = ConventionalTrainer(config, pack.generator, world)
        fixed = torch.randn(8, pack.generator.z_dim, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            targets = pack.generator.synthesize(pack.generator.sample_codes(fixed.to(world.device), truncation_psi=1.0))

        def step() -> dict[str, float]:
            return trainer.train_step(config.batch_size)
    else:
        dataset = real_photos(data_dir, pack.resolution, "the domain-guided encoder trains on real images")
        lambda_vgg = pack.lambda_vgg(config.lambda_vgg)
        trainer = EncoderTrainer(config, pack.generator, discriminator_for(pack), pack.perceptual, lambda_vgg, world)
        if config.warm_start:
            _warm_start(trainer, pack, config.warm_start)
        sampler = BatchSampler(len(dataset), seed=config.seed, mirror=config.mirror)
        targets = dataset.batch(torch.arange(min(8, len(dataset))).numpy()).to(world.device)

        def step() -> dict[str, float]:
            reals = load_batch(dataset, sampler, trainer.images_seen, config.batch_size)
            return trainer.train_step(reals[world.local_slice(config.batch_size)].to(world.device))

    def snapshot(path: Path) -> None:
        trainer.E.eval()
        with torch.no_grad():
            recon = pack.generator.synthesize(trainer.E(targets))
        trainer.E.train()
        save_image(make_grid(torch.cat([targets, recon]).cpu(), columns=len(targets)), path)

    return trainer, step, snapshot


def discriminator_for(pack: ModelPack) -> torch.nn.Module:
    """The discriminator the domain-guided encoder trains against: the pack's (from GAN training or a
    converted file), or, for a pack that has none, a new one trained from scratch alongside E: a
    StyleGAN2 discriminator with the generator's widths for a StyleGAN2 generator (as NVIDIA pairs
    them), otherwise a D_basic with the widths of the bundled 64 px pack's D."""
    if pack.discriminator is not None:
        return pack.discriminator
    torch.manual_seed(0)
    if isinstance(pack.generator, StyleGAN2Generator):
        return StyleGAN2Discriminator(pack.generator.config)
    return Discriminator(DiscriminatorConfig(resolution=pack.resolution, fmaps_base=32 * pack.resolution,
                                             fmaps_max=128))


def _warm_start(trainer: EncoderTrainer, pack: ModelPack, source_kind: bool | str) -> None:
    """Start E from one of the pack's encoders (same architecture), a shortcut for short budgets: the
    conventional encoder (``True`` or ``"conventional"``) is cheap to train on generated pairs, and the
    domain-guided losses then move it onto real images; the pack's own domain-guided encoder
    (``"encoder"``) continues its training on more photos. A resumed run overwrites this with its checkpoint."""
    which = "domain-guided" if source_kind == "encoder" else "conventional"
    source = pack.encoder if source_kind == "encoder" else pack.conventional_encoder
    if source is None:
        raise CheckpointError(f"pack {pack.name!r} has no {which} encoder to warm-start from; "
                              f"train one first or drop --warm-start")
    if source.config != trainer.E.config:
        raise CheckpointError(f"the pack's {which} encoder ({source.config}) differs from the encoder "
                              f"being trained ({trainer.E.config}); use the same --channels-base/--channels-max")
    trainer.E.load_state_dict(source.state_dict())


def _check_encoder_fits(encoder: EncoderConfig, pack: ModelPack) -> None:
    if (encoder.resolution, encoder.num_layers, encoder.w_dim) != (pack.resolution, *pack.code_shape):
        raise CheckpointError(f"the encoder configuration ({encoder.resolution}px → [{encoder.num_layers}, "
                              f"{encoder.w_dim}]) does not fit the pack ({pack.resolution}px → "
                              f"{list(pack.code_shape)})")


def distill_config_from_dict(data: dict) -> DistillConfig:
    """A distillation run's settings from its train_config.json (records before ``arch`` are StyleGAN students)."""
    data = dict(data)
    arch = data.setdefault("arch", "stylegan")
    if arch not in STUDENT_ARCHS:
        raise CheckpointError(f"train_config.json: unknown student arch {str(arch)[:40]!r}; this idinvert knows "
                              f"{', '.join(STUDENT_ARCHS)}")
    data["student"] = from_dict(GENERATOR_KINDS[arch][1], data["student"], what="student")
    data["discriminator"] = from_dict(DiscriminatorConfig, data["discriminator"])
    return DistillConfig(**data)


def run_distill(config: DistillConfig, teacher_dir: Path, data_dir: Path | None, options: RunOptions, *,
                world: Distributed, name: str | None = None) -> RunOutcome:
    """Distil a pack's generator into a StyleGAN or StyleGAN2 (``config.arch``); the finished student becomes
    ``RUN_DIR/pack``."""
    teacher = load_pack(teacher_dir, device=world.device)
    dataset = sampler = None
    if config.adv_kimg > 0:
        dataset = real_photos(data_dir, teacher.resolution, "the adversarial phase (--adv-kimg) trains on real photos")
        sampler = BatchSampler(len(dataset), seed=config.seed, mirror=True)
    record = {"kind": "distill", "teacher": str(teacher_dir), "data": str(data_dir) if data_dir else None,
              **json_ready(_asdict(config))}
    trainer = DistillTrainer(config, teacher.generator, world)
    fixed = torch.randn(8, teacher.generator.z_dim, generator=torch.Generator().manual_seed(7)).to(world.device)

    def step() -> dict[str, float]:
        reals = None
        if trainer.adversarial:
            cursor = trainer.images_seen - int(config.total_kimg * 1000)
            reals = load_batch(dataset, sampler, cursor, config.batch_size)[world.local_slice(config.batch_size)]
            reals = reals.to(world.device)
        return trainer.train_step(reals)

    def snapshot(path: Path) -> None:  # row 1: teacher, row 2: EMA student
        save_image(make_grid(trainer.comparison(fixed).cpu(), columns=len(fixed)), path)

    if options.total_images != config.total_images:
        raise ValueError("options.total_images must equal config.total_images (regression + adversarial)")
    outcome = run_training(trainer, step, options, config=record, world=world, snapshot=snapshot)
    if outcome.finished and world.is_main:
        save_student_pack(trainer, teacher, options.run_dir / "pack", name=name or f"{teacher.name}-{config.arch}")
    return outcome


def save_student_pack(trainer: DistillTrainer, teacher: ModelPack, folder: Path, *, name: str) -> Path:
    """The EMA student as a pack's generator, in the teacher's framing (and with D after an adversarial phase)."""
    extra = {k: teacher.config[k] for k in ("framing",) if teacher.config.get(k) is not None}
    extra["distilled_from"] = {"teacher": teacher.name, "images": trainer.images_seen}
    discriminator = copy.deepcopy(trainer.D).cpu().eval() if trainer.D is not None else None
    return save_pack(folder, name=name, generator=copy.deepcopy(trainer.Ss).cpu(), discriminator=discriminator,
                     perceptual_config=default_perceptual_config("torchvision"), overwrite=True, extra_config=extra)


def save_encoder_pack(trainer, pack: ModelPack, folder: Path, *, name: str, card: str | None = None) -> Path:
    """The base pack with the trained encoder added (and, for the domain-guided kind, its fine-tuned D)."""
    trained = copy.deepcopy(trainer.E)
    trained.set_sync_batch_norm(False)
    if isinstance(trainer, ConventionalTrainer):
        return copy_pack(pack, folder, name=name, card=card, overwrite=True, conventional_encoder=trained)
    return copy_pack(pack, folder, name=name, card=card, overwrite=True, encoder=trained, discriminator=trainer.D)


def export_run(run_dir: Path, out: Path, *, name: str | None = None) -> Path:
    """A model pack from the latest checkpoint of a run (finished or not)."""
    config_path = run_dir / "train_config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{run_dir} is not a training run folder (train_config.json missing)")
    record = read_json(config_path, error=CheckpointError)
    if not isinstance(record, dict) or not all(isinstance(record.get(k, ""), str) for k in ("kind", "pack", "teacher")):
        raise CheckpointError(f"{config_path} is not a run's settings; the run folder is damaged")
    kind = record.pop("kind", "gan")
    source = str(run_dir / "checkpoint.pt")
    state = load_checkpoint(run_dir / "checkpoint.pt")["trainer"]
    try:
        return _export(kind, record, state, source, out, name)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # settings another version or a hand wrote
        raise CheckpointError(f"{config_path}: settings this version cannot rebuild the run from "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None


def _export(kind: str, record: dict, state: dict, source: str, out: Path, name: str | None) -> Path:
    if kind == "distill":
        teacher = load_pack(record.pop("teacher"))
        record.pop("data", None)
        trainer = DistillTrainer(distill_config_from_dict(record), teacher.generator)
        restore_trainer(trainer, state, source)
        return save_student_pack(trainer, teacher, out, name=name or out.name)
    if kind == GAN2_RUN_KIND:
        return export_gan2(record, state, out, name=name or out.name, source=source)
    if kind == "gan":
        record.pop("data", None)
        trainer = GANTrainer(gan_config_from_dict(record))
        restore_trainer(trainer, state, source)
        return save_gan_pack(trainer, out, name=name or out.name)
    pack = load_pack(record.pop("pack"), with_discriminator=True)
    record.pop("data", None)
    config = encoder_config_from_dict({**record, "kind": kind})
    if kind == "conventional":
        trainer = ConventionalTrainer(config, pack.generator)
    else:
        trainer = EncoderTrainer(config, pack.generator, discriminator_for(pack), pack.perceptual, 0.0)
    restore_trainer(trainer, state, source)
    return save_encoder_pack(trainer, pack, out, name=name or pack.name)
