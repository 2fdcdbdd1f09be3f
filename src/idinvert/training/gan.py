"""StyleGAN training with the per-layer W+ mapping (spec §1.9).

Non-saturating logistic loss, R1 on reals (γ = 10, optionally lazy), Adam (β1 0, β2 0.99),
an EMA copy of the generator, ``w_avg`` tracking (layer 0, β 0.995), style mixing between two
W+ codes, mirror augmentation, and progressive growing: training starts at
``lod_initial_resolution`` and fades in each higher resolution (StyleGAN's lod schedule),
which lets a CPU spend most images at low, cheap resolutions.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..fileio import json_ready
from ..images import make_grid, save_image
from ..networks import Discriminator, StyleGANGenerator
from ..networks.config import DiscriminatorConfig, GeneratorConfig
from ..parallel import Distributed, broadcast_state, global_mean
from .common import GAN_STATE, ema_beta, ema_update, load_trainer_state, r1_penalty, trainer_state, update
from .data import BatchSampler, load_batch, seeded
from .runner import run_training


@dataclass(frozen=True)
class GANTrainConfig:
    """Hyperparameters of a GAN run (defaults: StyleGAN's, with lazy R1 for speed)."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    total_kimg: float = 25000.0  # images shown, in thousands
    batch_size: int = 32  # global minibatch where minibatch_by_resolution names none
    minibatch_by_resolution: tuple[tuple[int, int], ...] = ()  # ((resolution, batch), ...)
    lr: float = 0.002  # Adam learning rate of G and D
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float = 10.0  # γ of the R1 penalty on reals
    r1_interval: int = 1  # compute R1 every this many steps, scaled up to match (1 = StyleGAN v1)
    style_mixing_prob: float = 0.9
    w_avg_beta: float = 0.995  # dlatent_avg_beta
    ema_kimg: float = 10.0  # half-life of the generator EMA, thousands of images
    lod_initial_resolution: int = 8  # progressive growing starts here (= resolution: no growing)
    lod_training_kimg: float = 600.0  # images per resolution before the next fades in
    lod_transition_kimg: float = 600.0  # images over which a new resolution fades in
    mirror: bool = True  # horizontal flips with p = 0.5
    noise_mode: str = "random"  # per-layer noise during training (fixed buffers are used after)
    seed: int = 0


def schedule(config: GANTrainConfig, images_seen: int) -> tuple[float, int, int]:
    """``(lod, resolution, global batch)`` after ``images_seen`` images (StyleGAN's lod schedule)."""
    log2_res = config.generator.log2_resolution
    kimg = images_seen / 1000.0
    lod = float(log2_res - int(math.log2(config.lod_initial_resolution)))
    phase = config.lod_training_kimg + config.lod_transition_kimg
    if phase > 0 and lod > 0:
        phase_idx = math.floor(kimg / phase)
        phase_kimg = kimg - phase_idx * phase
        lod -= phase_idx
        if config.lod_transition_kimg > 0:
            lod -= max(phase_kimg - config.lod_training_kimg, 0.0) / config.lod_transition_kimg
    lod = max(lod, 0.0)
    resolution = config.generator.resolution >> int(math.floor(lod))
    batch = dict(config.minibatch_by_resolution).get(resolution, config.batch_size)
    return lod, resolution, batch


def mix_styles(wp: torch.Tensor, wp_other: torch.Tensor, cutoffs: torch.Tensor) -> torch.Tensor:
    """Rows ``≥ cutoff`` of each sample come from ``wp_other`` (cutoff = L: no mixing)."""
    rows = torch.arange(wp.shape[1], device=wp.device).view(1, -1, 1)
    return torch.where(rows < cutoffs.view(-1, 1, 1).to(wp.device), wp, wp_other)


class GANTrainer:
    """Holds G, D, the EMA generator Gs and their optimisers; ``train_step`` runs one D + G update."""

    def __init__(self, config: GANTrainConfig, world: Distributed | None = None) -> None:
        self.config = config
        self.world = world or Distributed()
        device = self.world.device
        torch.manual_seed(config.seed)
        self.G = StyleGANGenerator(config.generator).to(device).train()
        self.D = Discriminator(config.discriminator).to(device).train()
        broadcast_state(self.G, self.world)
        broadcast_state(self.D, self.world)
        self.Gs = copy.deepcopy(self.G).eval().requires_grad_(False)
        betas = (config.beta1, config.beta2)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=betas, eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=betas, eps=1e-8)
        self.images_seen = 0
        self.step_index = 0

    def _latents(self, batch: int, lod: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Global-batch draws for this step, sliced to this process: z, z_mix and mixing cutoffs."""
        rng = seeded(self.config.seed, 1, self.step_index)
        dim = self.config.generator.z_dim
        z = torch.randn(batch, dim, generator=rng)
        z_mix = torch.randn(batch, dim, generator=rng)
        active_layers = self.G.num_layers - 2 * int(math.floor(lod))
        cutoff = torch.randint(1, max(active_layers, 2), (batch,), generator=rng)
        mixing = torch.rand(batch, generator=rng) < self.config.style_mixing_prob
        cutoff = torch.where(mixing, cutoff, torch.full_like(cutoff, self.G.num_layers))
        part = self.world.local_slice(batch)
        device = self.world.device
        return z[part].to(device), z_mix[part].to(device), cutoff[part]

    def _generate(self, z: torch.Tensor, z_mix: torch.Tensor, cutoff: torch.Tensor, lod: float):
        wp = self.G.mapping(z)
        if bool((cutoff < self.G.num_layers).any()):
            wp = mix_styles(wp, self.G.mapping(z_mix), cutoff)
        return self.G.synthesis(wp, noise_mode=self.config.noise_mode, lod=lod), wp

    def train_step(self, reals: torch.Tensor, lod: float) -> dict[str, float]:
        """One discriminator then one generator step; ``reals`` is this process's slice in [-1, 1]."""
        cfg = self.config
        batch = reals.shape[0] * self.world.world_size
        z, z_mix, cutoff = self._latents(batch, lod)
        # Per-layer noise uses the global generator: reseed it from the step (and rank) so that
        # a resumed run draws the same noise as an uninterrupted one.
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=seeded(cfg.seed, 3, self.step_index,
                                                                          self.world.rank))))
        losses = {}

        # Discriminator: softplus(D(fake)) + softplus(−D(real)) + (γ/2)·E‖∇D(real)‖² (lazily).
        self.D.requires_grad_(True)
        with torch.no_grad():
            fakes, _ = self._generate(z, z_mix, cutoff, lod)
        do_r1 = cfg.r1_gamma > 0 and self.step_index % cfg.r1_interval == 0
        reals = reals.detach().requires_grad_(do_r1)
        real_scores = self.D(reals, lod=lod)
        fake_scores = self.D(fakes, lod=lod)
        loss_d = F.softplus(fake_scores).mean() + F.softplus(-real_scores).mean()
        losses["d_loss"] = loss_d.detach()
        if do_r1:
            r1 = r1_penalty(real_scores, reals)
            loss_d = loss_d + r1 * (cfg.r1_gamma / 2) * cfg.r1_interval
            losses["r1"] = r1.detach()
        update(self.opt_D, self.D.parameters(), loss_d, losses, self.step_index, self.world)

        # Generator: softplus(−D(G(z))).
        self.D.requires_grad_(False)
        fakes, wp = self._generate(z, z_mix, cutoff, lod)
        loss_g = F.softplus(-self.D(fakes, lod=lod)).mean()
        losses["g_loss"] = loss_g.detach()
        update(self.opt_G, self.G.parameters(), loss_g, losses, self.step_index, self.world)
        self.G.update_w_avg(global_mean(wp.detach().mean(dim=0, keepdim=True), self.world), cfg.w_avg_beta)

        ema_update(self.Gs, self.G, ema_beta(batch, cfg.ema_kimg))
        self.images_seen += batch
        self.step_index += 1
        return {k: float(v) for k, v in losses.items()}

    def state_dict(self) -> dict:
        return trainer_state(self, GAN_STATE)

    def load_state_dict(self, state: dict) -> None:
        load_trainer_state(self, state, GAN_STATE)


def sample_grid(generator: StyleGANGenerator, z: torch.Tensor, lod: float, *, psi: float = 1.0) -> torch.Tensor:
    """Images of fixed latents at the current level of detail, upsampled to full resolution."""
    with torch.no_grad():
        wp = generator.sample_codes(z, truncation_psi=psi)
        images = generator.synthesis(wp, lod=lod)
    scale = generator.resolution // images.shape[2]
    return F.interpolate(images, scale_factor=scale, mode="nearest") if scale > 1 else images


def train_gan(config: GANTrainConfig, dataset, options, *, world: Distributed | None = None,
              config_dict: dict | None = None):
    """Train from a prepared ``ImageDataset``; returns ``(trainer, RunOutcome)``."""
    world = world or Distributed()
    if dataset.resolution != config.generator.resolution:
        raise ValueError(f"the dataset is prepared at {dataset.resolution}px but the generator makes "
                         f"{config.generator.resolution}px images")
    trainer = GANTrainer(config, world)
    sampler = BatchSampler(len(dataset), seed=config.seed, mirror=config.mirror)
    fixed_z = torch.randn(32, config.generator.z_dim, generator=seeded(config.seed, 2)).to(world.device)

    def step() -> dict[str, float]:
        lod, resolution, batch = schedule(config, trainer.images_seen)
        reals = load_batch(dataset, sampler, trainer.images_seen, batch, resolution=resolution)
        losses = trainer.train_step(reals[world.local_slice(batch)].to(world.device), lod)
        return losses | {"lod": lod}

    def snapshot(path) -> None:
        lod, _, _ = schedule(config, trainer.images_seen)
        save_image(make_grid(sample_grid(trainer.Gs, fixed_z, lod), columns=8), path)

    outcome = run_training(trainer, step, options, config=config_dict or _config_dict(config), world=world,
                           snapshot=snapshot)
    return trainer, outcome


def _config_dict(config: GANTrainConfig) -> dict:
    return json_ready(dataclasses.asdict(config))
