"""The one generator interface the engine talks to.

Inversion, masked inversion, encoder training, boundaries, editing, evaluation and the editor
only use what ``CodeGenerator`` declares. Each generator kind implements it in one module:

- ``stylegan``: the official StyleGAN of IDInvert, codes are W+ ``[N, L, C]`` (L = 14 at 256);
- ``dcgan``: a Z-space generator with a single latent, codes ``[N, 1, z_dim]``;
- ``stylegan2``: NVIDIA's StyleGAN2, W+ ``[N, num_ws, w_dim]``.

A *code* is what inversion optimises and editing moves: always ``[N, L, C]``. Sampling goes
prior → code through ``sample_codes`` (z → W+ for StyleGANs, z itself for a Z-space GAN);
``synthesize`` turns codes into images in [-1, 1] (roughly: generators do not clip).
Operations that need several layers (style mixing, ``--layers``, layer-wise boundaries) ask
``require_layerwise`` first, which names the reason when a generator has a single latent.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

NOISE_MODES = ("const", "random", "none")


class CodeGenerator(nn.Module):
    """Base class of every generator kind; subclasses set ``kind`` and ``config`` and implement
    ``synthesize``, ``sample_codes`` and ``mean_code``."""

    kind: str = ""  # "stylegan" | "dcgan" | "stylegan2": stored in a pack's config.json
    config: object  # the kind's frozen configuration dataclass

    # --- shape -----------------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def num_layers(self) -> int:
        """L, rows of a code."""
        raise NotImplementedError

    @property
    def w_dim(self) -> int:
        """C, width of each row of a code."""
        raise NotImplementedError

    @property
    def z_dim(self) -> int:
        """Width of the prior's samples z."""
        return self.config.z_dim

    @property
    def code_shape(self) -> tuple[int, int]:
        return (self.num_layers, self.w_dim)

    @property
    def layerwise(self) -> bool:
        """Whether codes have per-layer rows that feed different layers (W+)."""
        return self.num_layers > 1

    @property
    def device(self) -> torch.device:
        return next(self.buffers(), next(self.parameters())).device

    def require_layerwise(self, what: str) -> None:
        """A one-line ConfigError when ``what`` needs per-layer codes and this generator has one latent."""
        if not self.layerwise:
            raise ConfigError(f"{what} needs a generator with layer-wise (W+) codes; this {self.kind} "
                              f"generator has a single {self.w_dim}-d latent (L = 1): use a StyleGAN pack")

    # --- the three operations ----------------------------------------------------------------------
    def synthesize(self, codes: torch.Tensor, *, noise_mode: str = "const") -> torch.Tensor:
        """Images ``[N, 3, R, R]`` from codes ``[N, L, C]`` (no truncation, deterministic by default)."""
        raise NotImplementedError

    def sample_codes(self, z: torch.Tensor, *, truncation_psi: float | None = None,
                     truncation_layers: int | None = None) -> torch.Tensor:
        """Codes ``[N, L, C]`` from prior samples z ``[N, z_dim]``; ψ = 1 disables truncation,
        ``None`` uses the generator's own default."""
        raise NotImplementedError

    def mean_code(self) -> torch.Tensor:
        """The code of the average sample, ``[L, C]`` (w_avg in every row; zero for a Z-space GAN)."""
        raise NotImplementedError

    # --- shared helpers ----------------------------------------------------------------------------
    def random_z(self, n: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """``n`` samples of the prior, z ~ N(0, I) ``[n, z_dim]``."""
        device = self.device if device is None else device
        return torch.randn(n, self.z_dim, generator=generator, device=device)

    def check_codes(self, codes: torch.Tensor) -> None:
        if codes.ndim != 3 or tuple(codes.shape[1:]) != self.code_shape:
            raise ValueError(f"expected codes [N, {self.num_layers}, {self.w_dim}], got {list(codes.shape)}")

    def forward(self, z: torch.Tensor, *, truncation_psi: float | None = None,
                truncation_layers: int | None = None, noise_mode: str = "const") -> torch.Tensor:
        """Images from prior samples z ``[N, z_dim]``, truncated with the configured ψ unless told otherwise."""
        codes = self.sample_codes(z, truncation_psi=truncation_psi, truncation_layers=truncation_layers)
        return self.synthesize(codes, noise_mode=noise_mode)
