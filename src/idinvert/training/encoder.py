"""Training the domain-guided encoder (Eq. 2/3 as implemented, spec §5) and the conventional
encoder baseline (Eq. 1).

Domain-guided: the generator is fixed (constant noise) and E learns from *real* images:

    L_E = mean((G(E(x)) − x)²) + λ_vgg·mean((F(G(E(x))) − F(x))²) + λ_adv·mean(softplus(−D(G(E(x)))))
    L_D = mean(softplus(D(G(E(x))))) + mean(softplus(−D(x))) + (γ/2)·mean_N ‖∇_x D(x)‖²

one E step then one D step on the same batch (the fake recomputed with the updated E), Adam
(β 0.9, 0.99) for both with the learning rate decaying continuously as ``lr·0.8^(t / (T/4))``.
D starts from the GAN's discriminator, E's batch norm uses batch statistics (synchronised
across processes in data-parallel runs).

Conventional: E learns to recover sampled codes from generated images only,
``min_E mean((E(G(w)) − w)²)`` with ``w = mapping(z)``, z ~ N(0, I) (no truncation).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..networks import CodeGenerator, Discriminator, DomainGuidedEncoder, VGG16Features
from ..networks.config import EncoderConfig
from ..parallel import Distributed, broadcast_state
from .common import load_trainer_state, r1_penalty, trainer_state, update
from .data import seeded


@dataclass(frozen=True)
class EncoderTrainConfig:
    """Hyperparameters of encoder training (defaults: the paper's and the official code's)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    total_kimg: float = 14000.0  # images shown, thousands (14M at 256)
    batch_size: int = 128  # global minibatch (16 per GPU × 8)
    lr: float = 1e-4  # initial Adam learning rate of E and D
    beta1: float = 0.9
    beta2: float = 0.99
    lr_decay: float = 0.8  # lr·decay^(t / (T·decay_fraction)), continuous
    decay_fraction: float = 0.25  # decay_step = max_iters // 4
    lambda_vgg: float | None = None  # λ_vgg; None = the pack's calibrated value
    lambda_adv: float = 0.1  # λ_adv (the paper; official code 0.05 / 0.08)
    r1_gamma: float = 10.0  # γ of R1 on reals
    mirror: bool = True
    seed: int = 1000  # rnd.np_random_seed of the official training
    kind: str = "domain-guided"  # domain-guided | conventional
    warm_start: bool | str = False  # domain-guided only, not the paper: True/"conventional" starts E from the
    # pack's conventional encoder, "encoder" from its domain-guided one

    def lr_at(self, images_seen: int) -> float:
        decay_images = max(self.total_kimg * 1000.0 * self.decay_fraction, 1.0)
        return self.lr * self.lr_decay ** (images_seen / decay_images)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class EncoderTrainer:
    """E (trainable), D (trainable, from the GAN), G and F (fixed); ``train_step`` = E step + D step."""

    def __init__(self, config: EncoderTrainConfig, generator: CodeGenerator, discriminator: Discriminator,
                 perceptual: VGG16Features, lambda_vgg: float, world: Distributed | None = None) -> None:
        self.config, self.world = config, world or Distributed()
        device = self.world.device
        torch.manual_seed(config.seed)
        self.G = generator.to(device).eval().requires_grad_(False)
        self.F = perceptual.to(device).eval().requires_grad_(False)
        self.D = copy.deepcopy(discriminator).to(device).train().requires_grad_(True)
        self.E = DomainGuidedEncoder(config.encoder).to(device).train()
        self.E.set_sync_batch_norm(self.world.world_size > 1)
        broadcast_state(self.E, self.world)
        self.lambda_vgg = lambda_vgg
        betas = (config.beta1, config.beta2)
        self.opt_E = torch.optim.Adam([p for p in self.E.parameters() if p.requires_grad], lr=config.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=betas)
        self.images_seen = 0
        self.step_index = 0
        self._check_batch()

    def _check_batch(self) -> None:
        """Refuse, before any training, a per-process batch that D cannot take (StyleGAN2's minibatch-std
        groups must divide it): one forward pass of blank images of that size."""
        local = self.config.batch_size // self.world.world_size
        res = self.config.encoder.resolution
        try:
            with torch.no_grad():
                self.D(torch.zeros(local, 3, res, res, device=self.world.device))
        except ValueError as exc:
            raise ConfigError(f"a minibatch of {self.config.batch_size} gives {local} images per process, which "
                              f"the discriminator cannot take ({exc}); choose another --batch") from None

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.G.synthesize(self.E(x))

    def train_step(self, reals: torch.Tensor) -> dict[str, float]:
        cfg = self.config
        lr = cfg.lr_at(self.images_seen)
        _set_lr(self.opt_E, lr)
        _set_lr(self.opt_D, lr)
        losses = {}

        # E step: pixel MSE + λ_vgg perceptual + λ_adv non-saturating adversarial loss.
        self.D.requires_grad_(False)
        recon = self.reconstruct(reals)
        pix = (recon - reals).square().mean()
        with torch.no_grad():
            real_features = self.F(reals)
        vgg = (self.F(recon) - real_features).square().mean()
        adv = F.softplus(-self.D(recon)).mean()
        loss_e = pix + self.lambda_vgg * vgg + cfg.lambda_adv * adv
        losses.update(pix=pix.detach(), vgg=(self.lambda_vgg * vgg).detach(), adv=adv.detach())
        update(self.opt_E, self.E.parameters(), loss_e, losses, self.step_index, self.world)

        # D step on the same batch, the fake recomputed with the updated E.
        self.D.requires_grad_(True)
        with torch.no_grad():
            fakes = self.reconstruct(reals)
        reals = reals.detach().requires_grad_(cfg.r1_gamma > 0)
        real_scores = self.D(reals)
        loss_d = F.softplus(self.D(fakes)).mean() + F.softplus(-real_scores).mean()
        losses["d_loss"] = loss_d.detach()
        if cfg.r1_gamma > 0:
            r1 = r1_penalty(real_scores, reals)
            loss_d = loss_d + r1 * (cfg.r1_gamma / 2)
            losses["r1"] = r1.detach()
        update(self.opt_D, self.D.parameters(), loss_d, losses, self.step_index, self.world)

        self.images_seen += reals.shape[0] * self.world.world_size
        self.step_index += 1
        return {k: float(v) for k, v in losses.items()} | {"lr": lr}

    STATE = ("E", "D", "opt_E", "opt_D")  # what a checkpoint holds besides the counters

    def state_dict(self) -> dict:
        return trainer_state(self, self.STATE)

    def load_state_dict(self, state: dict) -> None:
        load_trainer_state(self, state, self.STATE)


class ConventionalTrainer:
    """The Eq. 1 baseline: E regresses sampled W+ codes from G's images (no real data)."""

    def __init__(self, config: EncoderTrainConfig, generator: CodeGenerator,
                 world: Distributed | None = None) -> None:
        self.config, self.world = config, world or Distributed()
        device = self.world.device
        torch.manual_seed(config.seed)
        self.G = generator.to(device).eval().requires_grad_(False)
        self.E = DomainGuidedEncoder(config.encoder).to(device).train()
        self.E.set_sync_batch_norm(self.world.world_size > 1)
        broadcast_state(self.E, self.world)
        self.opt_E = torch.optim.Adam([p for p in self.E.parameters() if p.requires_grad], lr=config.lr,
                                      betas=(config.beta1, config.beta2))
        self.images_seen = 0
        self.step_index = 0

    def train_step(self, batch: int) -> dict[str, float]:
        lr = self.config.lr_at(self.images_seen)
        _set_lr(self.opt_E, lr)
        z = torch.randn(batch, self.G.z_dim, generator=seeded(self.config.seed, 4, self.step_index))
        z = z[self.world.local_slice(batch)].to(self.world.device)
        with torch.no_grad():
            codes = self.G.sample_codes(z, truncation_psi=1.0)
            images = self.G.synthesize(codes)
        loss = (self.E(images) - codes).square().mean()
        losses = {"code_mse": loss.detach()}
        update(self.opt_E, self.E.parameters(), loss, losses, self.step_index, self.world)
        self.images_seen += batch
        self.step_index += 1
        return {k: float(v) for k, v in losses.items()} | {"lr": lr}

    STATE = ("E", "opt_E")  # what a checkpoint holds besides the counters

    def state_dict(self) -> dict:
        return trainer_state(self, self.STATE)

    def load_state_dict(self, state: dict) -> None:
        load_trainer_state(self, state, self.STATE)


def config_dict(config: EncoderTrainConfig) -> dict:
    return dataclasses.asdict(config)
