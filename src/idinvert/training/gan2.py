"""StyleGAN2 training (Karras et al., CVPR 2020, config F) for ``StyleGAN2Generator`` packs.

Per step, as rosinality's ``train.py`` orders it and with NVIDIA's losses:

    D:      softplus(D(G(z))) + softplus(−D(x))
    D reg:  every ``r1_interval`` steps, (γ/2)·E‖∇_x D(x)‖² · r1_interval        (lazy R1)
    G:      softplus(−D(G(z)))
    G reg:  every ``pl_interval`` steps, E(‖J_wᵀ y‖₂ − a)² · pl_weight · pl_interval   (path length, optional)

with Adam (β1 0, β2 0.99) whose lr and betas are adjusted for the lazy intervals (c = k / (k + 1):
lr·c, β^c), style mixing between two z (p = 0.9), ``w_avg`` tracking (β 0.995, over the global batch),
an EMA copy of G (half-life ``ema_kimg``), mirror augmentation and no progressive growing. D has
G's widths. Every random draw is a function of the seed and the step, so a resumed run and a
K-process run repeat one uninterrupted process (the minibatch-std groups excepted: each process
forms its own, as in NVIDIA's data-parallel training).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..datasets import ImageDataset
from ..errors import ConfigError
from ..fileio import json_ready
from ..images import make_grid, save_image
from ..networks import StyleGAN2Config, StyleGAN2Discriminator, StyleGAN2Generator
from ..networks.config import from_dict
from ..pack import save_pack
from ..parallel import Distributed, broadcast_state, global_mean
from ..perceptual import default_perceptual_config
from .common import (GAN_STATE, ema_beta, ema_update, load_trainer_state, r1_penalty, restore_trainer, trainer_state,
                     update)
from .data import BatchSampler, load_batch, seeded
from .gan import mix_styles
from .runner import run_training


@dataclass(frozen=True)
class GAN2TrainConfig:
    """Hyperparameters of a StyleGAN2 run (defaults: config F of NVIDIA's StyleGAN2)."""

    network: StyleGAN2Config = field(default_factory=StyleGAN2Config)  # G, and D with the same widths
    total_kimg: float = 25000.0  # images shown, in thousands
    batch_size: int = 32  # global minibatch
    lr: float = 0.002  # Adam learning rate of G and D (before the lazy-regularisation adjustment)
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float = 10.0  # γ of the R1 penalty on reals (config F at 1024 px)
    r1_interval: int = 16  # D_reg_interval: lazy R1
    pl_weight: float = 2.0  # path-length regularisation weight (0: off)
    pl_interval: int = 4  # G_reg_interval
    pl_batch_shrink: int = 2  # the path-length batch is the minibatch divided by this
    pl_decay: float = 0.01  # running mean a of the path lengths
    style_mixing_prob: float = 0.9
    w_avg_beta: float = 0.995  # w_avg_beta of the mapping network
    ema_kimg: float = 10.0  # half-life of the generator EMA, thousands of images
    mirror: bool = True  # horizontal flips with p = 0.5
    noise_mode: str = "random"  # per-layer noise during training ("const": the stored maps)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "r1_interval", "pl_interval", "pl_batch_shrink"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"GAN2TrainConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.network.resolution < 8:
            raise ConfigError("StyleGAN2 training needs a resolution of at least 8 (the discriminator's)")
        if self.noise_mode not in ("random", "const", "none"):
            raise ConfigError(f"noise_mode must be random, const or none, got {self.noise_mode!r}")

    @property
    def total_images(self) -> int:
        return int(self.total_kimg * 1000)


def lazy_adam(params, lr: float, betas: tuple[float, float], interval: int | None) -> torch.optim.Adam:
    """Adam for a network regularised every ``interval`` steps: lr and betas scaled as in StyleGAN2 so
    that the main and regularisation steps together behave like one step of the original settings."""
    c = interval / (interval + 1) if interval else 1.0
    return torch.optim.Adam(params, lr=lr * c, betas=(betas[0] ** c, betas[1] ** c), eps=1e-8)


class GAN2Trainer:
    """G, D, the EMA generator Gs, their optimisers and the path-length mean; ``train_step`` runs one
    D step (+ lazy R1) and one G step (+ lazy path-length regularisation)."""

    def __init__(self, config: GAN2TrainConfig, world: Distributed | None = None) -> None:
        self.config = config
        self.world = world or Distributed()
        local = config.batch_size // self.world.world_size
        group = min(config.network.mbstd_group_size, local)
        if config.batch_size % self.world.world_size or (config.network.mbstd_channels and local % group):
            raise ConfigError(f"the minibatch of {config.batch_size} gives {config.batch_size / self.world.world_size:g}"
                              f" images per process, which must be a whole multiple of the discriminator's "
                              f"minibatch-std group ({config.network.mbstd_group_size}); choose another --batch")
        device = self.world.device
        torch.manual_seed(config.seed)
        self.G = StyleGAN2Generator(config.network).to(device).train()
        self.D = StyleGAN2Discriminator(config.network).to(device).train()
        broadcast_state(self.G, self.world)
        broadcast_state(self.D, self.world)
        self.Gs = copy.deepcopy(self.G).eval().requires_grad_(False)
        betas = (config.beta1, config.beta2)
        self.opt_G = lazy_adam(self.G.parameters(), config.lr, betas, config.pl_interval if config.pl_weight else None)
        self.opt_D = lazy_adam(self.D.parameters(), config.lr, betas, config.r1_interval if config.r1_gamma else None)
        self.pl_mean = torch.zeros([], device=device)
        self.images_seen = 0
        self.step_index = 0

    # --- random draws, all from (seed, step): the same on every process and after a resume ----------------
    def _latents(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z, z_mix and per-sample mixing cutoffs for the global batch, sliced to this process."""
        rng = seeded(self.config.seed, 1, self.step_index)
        num_ws, dim = self.G.num_ws, self.G.z_dim
        z, z_mix = torch.randn(batch, dim, generator=rng), torch.randn(batch, dim, generator=rng)
        cutoff = torch.randint(1, num_ws, (batch,), generator=rng)
        mixing = torch.rand(batch, generator=rng) < self.config.style_mixing_prob
        cutoff = torch.where(mixing, cutoff, torch.full_like(cutoff, num_ws))
        part, device = self.world.local_slice(batch), self.world.device
        return z[part].to(device), z_mix[part].to(device), cutoff[part]

    def _generate(self, z: torch.Tensor, z_mix: torch.Tensor, cutoff: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and their W+ codes (rows ≥ cutoff from z_mix), no truncation."""
        ws = self.G.mapping(z).unsqueeze(1).repeat(1, self.G.num_ws, 1)
        if bool((cutoff < self.G.num_ws).any()):
            ws = mix_styles(ws, self.G.mapping(z_mix).unsqueeze(1).repeat(1, self.G.num_ws, 1), cutoff)
        return self.G.synthesis(ws, self.config.noise_mode), ws

    def _reseed_noise(self, phase: int) -> None:
        """Per-layer noise comes from the global generator: seed it from (step, phase, rank)."""
        rng = seeded(self.config.seed, 3, self.step_index, phase, self.world.rank)
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=rng)))

    # --- one step -----------------------------------------------------------------------------------------
    def train_step(self, reals: torch.Tensor) -> dict[str, float]:
        """One D step and one G step (with their lazy regularisers); ``reals`` is this process's slice."""
        cfg = self.config
        batch = reals.shape[0] * self.world.world_size
        z, z_mix, cutoff = self._latents(batch)
        losses: dict[str, torch.Tensor] = {}

        self.D.requires_grad_(True)
        self._reseed_noise(0)
        with torch.no_grad():
            fakes, _ = self._generate(z, z_mix, cutoff)
        loss_d = F.softplus(self.D(fakes)).mean() + F.softplus(-self.D(reals)).mean()
        losses["d_loss"] = loss_d.detach()
        update(self.opt_D, self.D.parameters(), loss_d, losses, self.step_index, self.world)
        if cfg.r1_gamma > 0 and self.step_index % cfg.r1_interval == 0:
            x = reals.detach().requires_grad_(True)
            r1 = r1_penalty(self.D(x), x)
            losses["r1"] = r1.detach()
            update(self.opt_D, self.D.parameters(), r1 * (cfg.r1_gamma / 2) * cfg.r1_interval, losses,
                   self.step_index, self.world)

        self.D.requires_grad_(False)
        self._reseed_noise(1)
        fakes, ws = self._generate(z, z_mix, cutoff)
        loss_g = F.softplus(-self.D(fakes)).mean()
        losses["g_loss"] = loss_g.detach()
        update(self.opt_G, self.G.parameters(), loss_g, losses, self.step_index, self.world)
        if cfg.pl_weight > 0 and self.step_index % cfg.pl_interval == 0:
            penalty = self._path_length_penalty(batch)
            losses["pl"] = penalty.detach()
            update(self.opt_G, self.G.parameters(), penalty * cfg.pl_weight * cfg.pl_interval, losses,
                   self.step_index, self.world)
        with torch.no_grad():
            w_avg = self.G.mapping.w_avg
            w_avg.copy_(global_mean(ws[:, 0].detach().mean(dim=0), self.world).lerp(w_avg, cfg.w_avg_beta))

        ema_update(self.Gs, self.G, ema_beta(batch, cfg.ema_kimg))
        self.images_seen += batch
        self.step_index += 1
        return {k: float(v) for k, v in losses.items()} | {"pl_mean": float(self.pl_mean)}

    def _path_length_penalty(self, batch: int) -> torch.Tensor:
        """(‖J_wᵀ y‖ − a)², y ~ N(0, I)/√(H·W), on ``batch / pl_batch_shrink`` new samples (no mixing);
        a follows the global mean length with decay ``pl_decay``."""
        cfg = self.config
        n = max(batch // cfg.pl_batch_shrink, self.world.world_size)
        n -= n % self.world.world_size
        rng = seeded(cfg.seed, 4, self.step_index)
        res = cfg.network.resolution
        z = torch.randn(n, self.G.z_dim, generator=rng)
        y = torch.randn(n, 3, res, res, generator=rng) / res  # / √(H·W)
        part, device = self.world.local_slice(n), self.world.device
        self._reseed_noise(2)
        ws = self.G.mapping(z[part].to(device)).unsqueeze(1).repeat(1, self.G.num_ws, 1)
        images = self.G.synthesis(ws, cfg.noise_mode)
        (grad,) = torch.autograd.grad((images * y[part].to(device)).sum(), ws, create_graph=True)
        lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()  # [n]
        with torch.no_grad():
            self.pl_mean.copy_(self.pl_mean.lerp(global_mean(lengths.mean(), self.world), cfg.pl_decay))
        return (lengths - self.pl_mean).square().mean()

    # --- checkpoints ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return trainer_state(self, GAN_STATE) | {"pl_mean": self.pl_mean.cpu()}

    def load_state_dict(self, state: dict) -> None:
        load_trainer_state(self, state, GAN_STATE)
        self.pl_mean.copy_(state["pl_mean"])


# --- runs -----------------------------------------------------------------------------------------------------
RUN_KIND = "gan2"  # train_config.json "kind" of StyleGAN2 runs


def gan2_config_from_dict(data: dict) -> GAN2TrainConfig:
    data = dict(data)
    data["network"] = from_dict(StyleGAN2Config, data["network"], what="network")
    return from_dict(GAN2TrainConfig, data, what="train_config.json")


def save_gan2_pack(trainer: GAN2Trainer, folder: Path, *, name: str, overwrite: bool = True) -> Path:
    """The EMA generator and the discriminator as a StyleGAN2 pack (no encoder yet)."""
    return save_pack(folder, name=name, generator=copy.deepcopy(trainer.Gs).cpu().eval(),
                     discriminator=copy.deepcopy(trainer.D).cpu().eval(),
                     perceptual_config=default_perceptual_config("torchvision"), overwrite=overwrite)


def run_gan2(config: GAN2TrainConfig, data_dir: Path, options, *, world: Distributed | None = None,
             name: str = "gan") -> tuple[GAN2Trainer, object]:
    """Train on a folder made by ``prepare-data``; the finished run's pack is ``RUN_DIR/pack``.
    Returns ``(trainer, RunOutcome)``."""
    world = world or Distributed()
    dataset = ImageDataset(data_dir)
    if dataset.resolution != config.network.resolution:
        raise ConfigError(f"{data_dir} is prepared at {dataset.resolution}px but the generator makes "
                          f"{config.network.resolution}px images; prepare the data at {config.network.resolution}")
    if options.total_images != config.total_images:
        raise ValueError("options.total_images must equal config.total_images")
    trainer = GAN2Trainer(config, world)
    sampler = BatchSampler(len(dataset), seed=config.seed, mirror=config.mirror)
    fixed_z = torch.randn(32, config.network.z_dim, generator=seeded(config.seed, 2)).to(world.device)
    record = {"kind": RUN_KIND, "data": str(data_dir), **json_ready(dataclasses.asdict(config))}

    def step() -> dict[str, float]:
        reals = load_batch(dataset, sampler, trainer.images_seen, config.batch_size)
        return trainer.train_step(reals[world.local_slice(config.batch_size)].to(world.device))

    def snapshot(path: Path) -> None:
        with torch.no_grad():
            images = trainer.Gs.synthesize(trainer.Gs.sample_codes(fixed_z, truncation_psi=1.0))
        save_image(make_grid(images.cpu(), columns=8), path)

    outcome = run_training(trainer, step, options, config=record, world=world, snapshot=snapshot)
    if outcome.finished and world.is_main:
        save_gan2_pack(trainer, options.run_dir / "pack", name=name)
    return trainer, outcome


def export_gan2(record: dict, state: dict, out: Path, *, name: str, source: str = "checkpoint.pt") -> Path:
    """``idinvert export`` of a StyleGAN2 run: its checkpoint's EMA generator and D as a pack."""
    record = {k: v for k, v in record.items() if k not in ("kind", "data")}
    trainer = GAN2Trainer(gan2_config_from_dict(record))
    restore_trainer(trainer, state, source)
    return save_gan2_pack(trainer, out, name=name)

