"""A Z-space generator: the DCGAN (Radford et al., 2016) behind the ``dcgan-faces64`` pack.

z ``[N, z_dim]`` → ``convTr1`` (4×4 transposed conv, stride 1: 1×1 → 4×4) → BatchNorm → ReLU →
``convTr2..k`` (4×4, stride 2, pad 1: doubling the side) each with BatchNorm and ReLU → the last
transposed conv to RGB → tanh. No biases. BatchNorm always uses its running statistics (eval mode),
so an image depends only on its own z. The state_dict keys are those of the pretrained face model
in PyPI ``generateme`` (``convTr{i}.weight``, ``batchNorm{i}.*``).

Codes are z itself as ``[N, 1, z_dim]`` (L = 1): the engine inverts and edits in Z, as
InterFaceGAN first did for PGGAN. The prior is N(0, I); the mean code is 0; truncation scales z.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import NOISE_MODES, CodeGenerator


@dataclass(frozen=True)
class DCGANConfig:
    """A DCGAN generator: ``len(fmaps) + 1`` transposed convolutions from a 1×1 z to R×R."""

    resolution: int = 64  # R = 4 · 2^len(fmaps)
    z_dim: int = 100  # dimension of z (the code's C)
    fmaps: tuple[int, ...] = (512, 256, 128, 64)  # channels after convTr1 … convTr{k}
    image_channels: int = 3
    batch_norm_eps: float = 1e-5  # nn.BatchNorm2d's default
    truncation_psi: float = 1.0  # z ← ψ·z when sampling (1 = off)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fmaps", tuple(self.fmaps))
        if not 1 <= len(self.fmaps) <= 8 or any(not 1 <= int(c) <= 4096 for c in self.fmaps):
            raise ConfigError("DCGANConfig.fmaps must list 1–8 widths of 1–4096 channels")
        if self.resolution != 4 * 2 ** len(self.fmaps):
            raise ConfigError(f"a DCGAN with {len(self.fmaps)} hidden widths makes {4 * 2 ** len(self.fmaps)} px "
                              f"images, not {self.resolution}")
        if not 1 <= self.z_dim <= 4096 or not 1 <= self.image_channels <= 4:
            raise ConfigError("DCGANConfig: z_dim must be 1–4096 and image_channels 1–4")
        if not (0 < self.batch_norm_eps < 1 and 0 <= self.truncation_psi <= 1):
            raise ConfigError("DCGANConfig: batch_norm_eps must be in (0, 1) and truncation_psi in [0, 1]")


class DCGANGenerator(CodeGenerator):
    """The DCGAN as a ``CodeGenerator`` with single-row codes ``[N, 1, z_dim]``."""

    kind = "dcgan"

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.z_dim, *config.fmaps, config.image_channels]
        for i in range(len(widths) - 1):
            self.add_module(f"convTr{i + 1}", nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 1 if i == 0 else 2,
                                                                 0 if i == 0 else 1, bias=False))
            if i < len(config.fmaps):
                self.add_module(f"batchNorm{i + 1}", nn.BatchNorm2d(widths[i + 1], eps=config.batch_norm_eps))
        self.depth = len(widths) - 1

    @property
    def num_layers(self) -> int:
        return 1

    @property
    def w_dim(self) -> int:
        return self.config.z_dim

    def synthesize(self, codes: torch.Tensor, *, noise_mode: str = "const") -> torch.Tensor:
        self.check_codes(codes)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}")
        x = codes.reshape(codes.shape[0], -1, 1, 1)
        for i in range(1, self.depth + 1):
            x = getattr(self, f"convTr{i}")(x)
            if i < self.depth:
                bn = getattr(self, f"batchNorm{i}")
                # Running statistics whatever the module's mode: training an encoder through G must
                # not turn G's normalisation into a batch-dependent one.
                x = F.relu(F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))
        return torch.tanh(x)

    def sample_codes(self, z: torch.Tensor, *, truncation_psi: float | None = None,
                     truncation_layers: int | None = None) -> torch.Tensor:
        psi = self.config.truncation_psi if truncation_psi is None else truncation_psi
        codes = z.reshape(z.shape[0], 1, self.z_dim)
        return codes if psi == 1.0 else codes * psi

    def mean_code(self) -> torch.Tensor:
        weight = self.convTr1.weight
        return torch.zeros(1, self.z_dim, dtype=weight.dtype, device=weight.device)
