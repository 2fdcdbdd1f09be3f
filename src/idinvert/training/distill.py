"""Distilling any pack's generator (the teacher) into a StyleGAN with layer-wise W+ codes (the student).

For the teacher's own prior samples z ~ N(0, I), the student (the project's StyleGAN, or with
``arch="stylegan2"`` a StyleGAN2, whose weight demodulation avoids StyleGAN1's "droplet" artifact;
either maps the same z) learns to reproduce the teacher's image — a regression with an exact target per
sample, much cheaper than adversarial training:

    L = λ_l1·mean|S(z) − T(z)| + λ_lpips·LPIPS_alex(S(z), T(z)) + λ_mix·L_mix

``L_mix`` keeps the W+ rows separable (what style mixing relies on): for a share of the batch the
rows from a random cutoff c on come from another sample z₂; those layers act at resolutions above
the coarse ones, so the mixed image, low-passed to the resolution of layer c − 1, must still equal
the low-passed teacher image of z (each generator's config says at which resolution a W+ row acts).
Adam (β 0, 0.99), an EMA copy of the student, ``w_avg`` tracking.

Optionally (``adv_kimg``), a short adversarial phase follows: the same regression plus
λ_adv·softplus(−D(S(z))) against a discriminator trained on real photos in the teacher's framing
(R1 on reals), so that the student may gain sharpness the regression blurs away without leaving
the teacher (the regression term stays on).

Deliberate differences from GAN training: the mapping network learns at full rate (``mapping_lr_mul``
1, not 0.01 — with 0.01 the student ignores z and learns the mean face), and the synthesis uses the
fixed noise buffers, since the teacher's images have no per-sample noise to imitate.

The trainer only uses what both student kinds share: ``sample_codes(z, truncation_psi=1)`` (W+ with
gradients), ``synthesize``, ``update_w_avg`` and ``config.layer_resolution``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..metrics.lpips import load_lpips
from ..networks import GENERATOR_KINDS, CodeGenerator, Discriminator, StyleGAN2Config
from ..networks.config import DiscriminatorConfig, GeneratorConfig
from ..parallel import Distributed, broadcast_state, global_mean
from .common import ema_beta, ema_update, load_trainer_state, r1_penalty, trainer_state, update
from .data import seeded
from .gan import mix_styles


LPIPS_MIN_SIDE = 32  # AlexNet's trunk needs at least this much
STUDENT_ARCHS = ("stylegan", "stylegan2")  # the generator kinds a student may be


def student_config(arch: str, *, resolution: int = 64, z_dim: int = 100, w_dim: int = 256, mapping_layers: int = 4,
                   mapping_lr_mul: float = 1.0, fmaps_base: int = 2048, fmaps_max: int | None = None
                   ) -> GeneratorConfig | StyleGAN2Config:
    """The student's configuration for ``arch``: by default a 64 px student a CPU can train, with channels
    min(fmaps_base // r, fmaps_max) of 256, 256, 128, 64, 32 (StyleGAN) or 128, 128, 128, 64, 32 (StyleGAN2)
    at 4 … 64 px. ``fmaps_max`` None picks the kind's. The StyleGAN2 default (1.46 M parameters against
    the StyleGAN's 3.93 M) was chosen when its modulated convolutions still built per-sample weights; with
    the activation path (``fused_modconv_pays``) it trains at about 29 images/s on one CPU thread against
    the StyleGAN's 14–22, so a wider StyleGAN2 student is affordable where capacity limits the match."""
    if fmaps_max is None:
        fmaps_max = 128 if arch == "stylegan2" else 256
    if arch == "stylegan":
        return GeneratorConfig(resolution=resolution, z_dim=z_dim, w_dim=w_dim, mapping_layers=mapping_layers,
                               mapping_fmaps=w_dim, mapping_lr_mul=mapping_lr_mul, fmaps_base=fmaps_base,
                               fmaps_max=fmaps_max)
    if arch == "stylegan2":
        return StyleGAN2Config(resolution=resolution, z_dim=z_dim, w_dim=w_dim, mapping_layers=mapping_layers,
                               mapping_lr_mul=mapping_lr_mul, channel_base=fmaps_base, channel_max=fmaps_max)
    raise ConfigError(f"the student architecture must be one of {', '.join(STUDENT_ARCHS)}, got {arch!r}")


def _lpips_size(*images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Images below LPIPS's smallest size, bilinearly upsampled to it (tiny test generators)."""
    if images[0].shape[-1] >= LPIPS_MIN_SIDE:
        return images
    return tuple(F.interpolate(x, size=LPIPS_MIN_SIDE, mode="bilinear", align_corners=False) for x in images)


@dataclass(frozen=True)
class DistillConfig:
    """Hyperparameters of a distillation run."""

    arch: str = "stylegan"  # the student's generator kind: stylegan (AdaIN) or stylegan2 (demodulation)
    student: GeneratorConfig | StyleGAN2Config | None = None  # its network; None: student_config(arch)
    total_kimg: float = 300.0  # regression images, thousands
    adv_kimg: float = 0.0  # adversarial fine-tuning images after the regression, thousands (0 = none)
    batch_size: int = 32  # global minibatch
    lr: float = 0.002  # Adam learning rate of the student (and of D)
    beta1: float = 0.0
    beta2: float = 0.99
    lambda_l1: float = 1.0  # weight of the pixel L1 term
    lambda_lpips: float = 1.0  # weight of LPIPS (AlexNet trunk); 0 = pixels only
    mixing_prob: float = 0.3  # share of the batch with a second code from a cutoff on
    lambda_mix: float = 1.0  # weight of the low-passed mixing term
    lambda_adv: float = 0.05  # weight of the adversarial term in the adversarial phase
    r1_gamma: float = 10.0  # γ of R1 on reals (adversarial phase)
    discriminator: DiscriminatorConfig = field(default_factory=lambda: DiscriminatorConfig(
        resolution=64, fmaps_base=2048, fmaps_max=128))
    w_avg_beta: float = 0.995
    ema_kimg: float = 5.0  # half-life of the student's EMA, thousands of images
    seed: int = 0

    def __post_init__(self) -> None:
        if self.student is None:
            object.__setattr__(self, "student", student_config(self.arch))
        if self.arch not in STUDENT_ARCHS or not isinstance(self.student, GENERATOR_KINDS[self.arch][1]):
            raise ConfigError(f"distill: the student must be a {' or '.join(STUDENT_ARCHS)} configuration that "
                              f"matches arch {self.arch!r}, got {type(self.student).__name__}")
        if self.total_kimg < 0 or self.adv_kimg < 0 or self.batch_size < 1 or not 0 < self.lr < 1:
            raise ConfigError("distill: kimg values must be ≥ 0, the batch ≥ 1 and lr in (0, 1)")
        if not 0 <= self.mixing_prob <= 1 or min(self.lambda_l1, self.lambda_lpips, self.lambda_mix,
                                                   self.lambda_adv) < 0:
            raise ConfigError("distill: mixing_prob must be in [0, 1] and loss weights ≥ 0")

    @property
    def total_images(self) -> int:
        return int((self.total_kimg + self.adv_kimg) * 1000)


class DistillTrainer:
    """Student S (trainable), its EMA Ss, teacher T (fixed), LPIPS (fixed) and, for the adversarial
    phase, D; ``train_step(reals)`` runs one update (``reals`` only matter in the adversarial phase)."""

    def __init__(self, config: DistillConfig, teacher: CodeGenerator, world: Distributed | None = None) -> None:
        s = config.student
        if (s.resolution, s.z_dim) != (teacher.resolution, teacher.z_dim):
            raise ConfigError(f"the student ({s.resolution} px, z {s.z_dim}) must match the teacher "
                              f"({teacher.resolution} px, z {teacher.z_dim})")
        self.config, self.world = config, world or Distributed()
        device = self.world.device
        torch.manual_seed(config.seed)
        self.T = teacher.to(device).eval().requires_grad_(False)
        self.S = GENERATOR_KINDS[config.arch][0](s).to(device).train()
        broadcast_state(self.S, self.world)
        self.Ss = copy.deepcopy(self.S).eval().requires_grad_(False)
        self.lpips = load_lpips("alex", device) if config.lambda_lpips > 0 else None
        betas = (config.beta1, config.beta2)
        self.opt_S = torch.optim.Adam(self.S.parameters(), lr=config.lr, betas=betas, eps=1e-8)
        self.D = self.opt_D = None
        if config.adv_kimg > 0:
            self.D = Discriminator(config.discriminator).to(device).train()
            broadcast_state(self.D, self.world)
            self.opt_D = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=betas, eps=1e-8)
        self.images_seen = 0
        self.step_index = 0

    @property
    def adversarial(self) -> bool:
        return self.D is not None and self.images_seen >= self.config.total_kimg * 1000

    def _draws(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """This step's z, z₂, mixing mask (this process's slice) and cutoff, from the global step."""
        rng = seeded(self.config.seed, 5, self.step_index)
        z = torch.randn(batch, self.T.z_dim, generator=rng)
        z2 = torch.randn(batch, self.T.z_dim, generator=rng)
        mixed = torch.rand(batch, generator=rng) < self.config.mixing_prob
        cutoff = int(torch.randint(2, self.S.num_layers, (1,), generator=rng))
        part = self.world.local_slice(batch)
        device = self.world.device
        return z[part].to(device), z2[part].to(device), mixed[part].to(device), cutoff

    def losses(self, z: torch.Tensor, z2: torch.Tensor, mixed: torch.Tensor, cutoff: int
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The regression loss, its terms, the student's codes and images of z."""
        cfg = self.config
        with torch.no_grad():
            target = self.T.synthesize(self.T.sample_codes(z, truncation_psi=1.0))
        wp = self.S.sample_codes(z, truncation_psi=1.0)  # [N, L, C], with gradients
        image = self.S.synthesize(wp)
        terms = {"l1": (image - target).abs().mean()}
        total = cfg.lambda_l1 * terms["l1"]
        if self.lpips is not None:
            terms["lpips"] = self.lpips(*_lpips_size(image, target)).mean()
            total = total + cfg.lambda_lpips * terms["lpips"]
        if cfg.lambda_mix > 0 and bool(mixed.any()):
            cut = torch.full((int(mixed.sum()),), cutoff)
            mix = self.S.synthesize(mix_styles(wp[mixed], self.S.sample_codes(z2[mixed], truncation_psi=1.0), cut))
            side = self.S.config.layer_resolution(cutoff - 1)  # the coarsest resolution the cutoff leaves alone
            factor = self.S.resolution // side
            per_sample = (F.avg_pool2d(mix, factor) - F.avg_pool2d(target[mixed], factor)).abs().flatten(1).mean(1)
            terms["mix"] = per_sample.sum() / len(z)  # over the whole batch: data-parallel ranks weigh alike
            total = total + cfg.lambda_mix * terms["mix"]
        return total, terms, wp, image

    def train_step(self, reals: torch.Tensor | None = None) -> dict[str, float]:
        cfg = self.config
        local = reals.shape[0] if reals is not None else cfg.batch_size // self.world.world_size
        batch = local * self.world.world_size
        z, z2, mixed, cutoff = self._draws(batch)
        adversarial = self.adversarial
        logged: dict[str, torch.Tensor] = {}
        if adversarial:
            logged.update(self._discriminator_step(reals, z))
        total, terms, wp, image = self.losses(z, z2, mixed, cutoff)
        if adversarial:
            self.D.requires_grad_(False)
            terms["g_adv"] = F.softplus(-self.D(image)).mean()
            total = total + cfg.lambda_adv * terms["g_adv"]
        logged.update(terms)
        update(self.opt_S, self.S.parameters(), total, logged, self.step_index, self.world)
        self.S.update_w_avg(global_mean(wp.detach().mean(dim=0, keepdim=True), self.world), cfg.w_avg_beta)
        ema_update(self.Ss, self.S, ema_beta(batch, cfg.ema_kimg))
        self.images_seen += batch
        self.step_index += 1
        return {k: float(v.detach()) for k, v in logged.items()}

    def _discriminator_step(self, reals: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        if reals is None:
            raise ConfigError("the adversarial phase needs real photos (--data)")
        self.D.requires_grad_(True)
        with torch.no_grad():
            fakes = self.S.synthesize(self.S.sample_codes(z, truncation_psi=1.0))
        reals = reals.detach().requires_grad_(cfg.r1_gamma > 0)
        real_scores = self.D(reals)
        loss = F.softplus(self.D(fakes)).mean() + F.softplus(-real_scores).mean()
        out = {"d_loss": loss.detach()}
        if cfg.r1_gamma > 0:
            r1 = r1_penalty(real_scores, reals)
            loss = loss + r1 * cfg.r1_gamma / 2
            out["r1"] = r1.detach()
        update(self.opt_D, self.D.parameters(), loss, out, self.step_index, self.world)
        return out

    @torch.no_grad()
    def comparison(self, z: torch.Tensor) -> torch.Tensor:
        """Teacher images above the EMA student's for the same z: ``[2·N, 3, R, R]``."""
        teacher = self.T.synthesize(self.T.sample_codes(z, truncation_psi=1.0))
        return torch.cat([teacher, self.Ss.synthesize(self.Ss.sample_codes(z, truncation_psi=1.0))]).clamp(-1, 1)

    STATE = ("S", "Ss", "opt_S")  # what a checkpoint holds besides the counters (and D, opt_D when adversarial)

    def state_dict(self) -> dict:
        return trainer_state(self, self.STATE + (("D", "opt_D") if self.D is not None else ()))

    def load_state_dict(self, state: dict) -> None:
        adversarial = self.D is not None and "D" in state
        load_trainer_state(self, state, self.STATE + (("D", "opt_D") if adversarial else ()))
