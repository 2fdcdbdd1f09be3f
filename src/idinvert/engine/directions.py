"""Edit directions found without labels: closed-form factorisation (SeFa) and PCA of the prior (GANSpace).

- **SeFa** (Shen & Zhou, *Closed-Form Factorization of Latent Semantics in GANs*, CVPR 2021): the
  layers that read a code ``w`` start with an affine map ``y = A w + b``. Moving ``w`` by ``α·n``
  moves ``y`` by ``α·A n``, so the directions that change the chosen layers most are
  ``argmax ‖A n‖²`` over unit ``n``: the eigenvectors of ``AᵀA``, sorted by eigenvalue. ``A`` stacks
  the weights of every chosen layer (``[Σ outputs, C]``); each row (one output unit) is scaled to unit
  norm first, as the method's released code does, so that layers of different widths and gains weigh
  alike. Where the weights live depends on the generator kind (``layer_weights``): StyleGAN's style
  affine layers (``synthesis.layer{i}.epilogue.style_mod.dense``), StyleGAN2's modulation affines
  (every layer that reads the row: ``conv0``/``conv1`` and ``torgb``), and for a Z-space DCGAN the
  first transposed convolution (``convTr1.weight [z_dim, C, 4, 4]``: 1×1 → 4×4, as for PGGAN in
  the paper).
- **GANSpace** (Härkönen et al., *GANSpace: Discovering Interpretable GAN Controls*, NeurIPS 2020):
  principal components of codes sampled from the prior (``sample_codes`` of seeded z, without
  truncation), sorted by variance, applied to the chosen layers. When the chosen rows of every
  sample are equal (a StyleGAN2's broadcast ``w``, a single-latent generator) the PCA runs on one row,
  which is the paper's PCA in W; IDInvert's per-layer W+ mapping gives each row its own values, so the
  chosen rows are analysed together as one vector.

Both return ``Directions``: ``vectors [K, L, C]`` that are boundaries in the official sense (moved by
``editing.manipulate``: ``wp'[l] = wp[l] + d·b[l]`` on ``layers``). A SeFa direction is a unit vector
repeated in every row; a GANSpace component has RMS row norm 1 over its layers (a unit vector in
each row when the rows are shared), so a distance means the same for both and for InterFaceGAN's
unit boundaries. Signs are fixed so that each direction's largest entry is positive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..boundaries import Boundary, parse_layers
from ..errors import ConfigError
from ..networks.base import CodeGenerator

METHODS = ("sefa", "ganspace")
DEFAULT_SAMPLES = 10_000  # prior samples of GANSpace's PCA


@dataclass(frozen=True)
class Directions:
    """K directions of one method, strongest first."""

    method: str  # "sefa" | "ganspace"
    vectors: torch.Tensor  # [K, L, C]; rows outside ``layers`` are zero for a per-layer GANSpace PCA
    values: torch.Tensor  # [K] SeFa: eigenvalues of AᵀA; GANSpace: variance of the samples along the component
    layers: tuple[int, ...]  # rows the directions move (manipulate_layers)
    scales: torch.Tensor  # [K] the prior's standard deviation along each direction, in distance units (NaN: unknown)

    def boundary(self, k: int) -> Boundary:
        """Direction ``k`` (0-based) as an ``editing.Boundary``."""
        return Boundary(self.vectors[k].detach().cpu().float(), self.layers,
                        {"method": self.method, "index": k + 1, "value": float(self.values[k])})

    def __len__(self) -> int:
        return self.vectors.shape[0]


# --- the weights that read a code -------------------------------------------------------------------

def _stylegan_weights(generator: CodeGenerator, layer: int) -> list[torch.Tensor]:
    dense = getattr(generator.synthesis, f"layer{layer}").epilogue.style_mod.dense
    return [dense.fc.weight * dense.scale]  # [2·channels, C]: the AdaIN scales and biases


def _stylegan2_weights(generator: CodeGenerator, layer: int) -> list[torch.Tensor]:
    """Every modulation affine that reads row ``layer`` (see ``StyleGAN2SynthesisNetwork.forward``):
    row 0 the 4×4 ``conv1``; row 2i the ``conv1`` of block i; row 2i + 1 the ``torgb`` of block i
    and the ``conv0`` of block i + 1."""
    synthesis = generator.synthesis
    affines = []
    for i, res in enumerate(synthesis.resolutions):
        block = getattr(synthesis, f"b{res}")
        if layer == 2 * i:
            affines.append(block.conv1.affine)
        if layer == 2 * i + 1:
            affines.append(block.torgb.affine)
        if res > 4 and layer == 2 * i - 1:
            affines.append(block.conv0.affine)
    return [a.weight * a.weight_gain for a in affines]  # each [in_channels, C]


def _dcgan_weights(generator: CodeGenerator, layer: int) -> list[torch.Tensor]:
    weight = generator.convTr1.weight  # [z_dim, C, 4, 4]: output (c, y, x) = Σ_k z_k W[k, c, y, x]
    return [weight.flatten(1).t()]  # [C·16, z_dim]


LAYER_WEIGHTS: dict[str, Callable[[CodeGenerator, int], list[torch.Tensor]]] = {
    "stylegan": _stylegan_weights,
    "stylegan2": _stylegan2_weights,
    "dcgan": _dcgan_weights,
}


def layer_weights(generator: CodeGenerator, layers: Sequence[int]) -> torch.Tensor:
    """A = the weights mapping a code row into the chosen layers, stacked: ``[Σ outputs, C]`` (float64)."""
    reader = LAYER_WEIGHTS.get(generator.kind)
    if reader is None:
        raise ConfigError(f"SeFa does not know where a {generator.kind!r} generator's code enters its layers; "
                          f"it supports {', '.join(LAYER_WEIGHTS)} (use --method ganspace)")
    with torch.no_grad():
        return torch.cat([w.detach().double().cpu() for layer in layers for w in reader(generator, layer)])


# --- the two methods --------------------------------------------------------------------------------

def choose_layers(generator: CodeGenerator, layers: str | Sequence[int] | None) -> list[int]:
    """``parse_layers`` for this generator; a layer choice needs layer-wise codes."""
    if layers is not None and not (isinstance(layers, str) and not layers.strip()):
        generator.require_layerwise("choosing layers")
    return parse_layers(layers, generator.num_layers)


def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Each row of ``vectors [K, D]`` times ±1 so that its entry of largest magnitude is positive."""
    flat = vectors.flatten(1)
    pivot = flat.gather(1, flat.abs().argmax(dim=1, keepdim=True))
    return vectors * torch.where(pivot < 0, -1.0, 1.0).to(vectors.dtype).view(-1, *[1] * (vectors.ndim - 1))


def _top_eigen(matrix: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``num`` largest eigenvalues ``[K]`` and unit eigenvectors ``[K, D]`` of a symmetric matrix."""
    values, vectors = torch.linalg.eigh(matrix)  # ascending
    order = values.argsort(descending=True)[:num]
    return values[order], _fix_signs(vectors[:, order].t())


def _check_num(num: int, limit: int, what: str) -> None:
    if not 1 <= num <= limit:
        raise ConfigError(f"--num {num}: {what} has {limit} directions; ask for 1 to {limit}")


def sefa(generator: CodeGenerator, *, layers: str | Sequence[int] | None = None, num: int = 10,
         normalize: bool = True) -> Directions:
    """SeFa: the ``num`` unit eigenvectors of ``AᵀA`` with the largest eigenvalues (see the module docstring).

    ``layers``: rows whose layers are factorised and moved (None: all); a Z-space generator has one.
    ``normalize``: scale each row of A to unit norm first (the released code's choice).
    """
    chosen = choose_layers(generator, layers)
    a = layer_weights(generator, chosen)  # [M, C]
    if normalize:
        a = a / a.norm(dim=1, keepdim=True).clamp(min=1e-12)
    _check_num(num, a.shape[1], f"a {a.shape[1]}-d code")
    values, vectors = _top_eigen(a.t() @ a, num)  # [K], [K, C]
    rows = vectors.float()[:, None].expand(-1, generator.num_layers, -1).contiguous()  # [K, L, C]
    return Directions("sefa", rows, values.float(), tuple(chosen), torch.full((num,), float("nan")))


@torch.no_grad()
def sample_prior_codes(generator: CodeGenerator, count: int, *, seed: int = 0, batch_size: int = 1000,
                       truncation_psi: float = 1.0) -> torch.Tensor:
    """``count`` codes ``[count, L, C]`` (float32, CPU) of z drawn from the prior with ``torch.Generator(seed)``."""
    rng = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, count, batch_size):
        z = torch.randn(min(batch_size, count - start), generator.z_dim, generator=rng)
        chunks.append(generator.sample_codes(z.to(generator.device), truncation_psi=truncation_psi).float().cpu())
    return torch.cat(chunks)


def ganspace(generator: CodeGenerator, *, layers: str | Sequence[int] | None = None, num: int = 10,
             samples: int = DEFAULT_SAMPLES, seed: int = 0, codes: torch.Tensor | None = None) -> Directions:
    """GANSpace: the ``num`` principal components of ``samples`` prior codes on the chosen layers.

    ``codes [N, L, C]`` replaces the sampling (the PCA then depends on them alone).
    """
    chosen = choose_layers(generator, layers)
    if codes is None:
        if samples < 2:
            raise ConfigError(f"--samples {samples}: the PCA needs at least 2 samples")
        codes = sample_prior_codes(generator, samples, seed=seed)
    x = codes[:, chosen].double()  # [N, S, C]
    shared = bool((x == x[:, :1]).all())  # one w in every chosen row: PCA of that row
    data = x[:, 0] if shared else x.flatten(1)  # [N, D]
    _check_num(num, min(data.shape[1], data.shape[0] - 1),
               f"a PCA of {data.shape[0]} samples in {data.shape[1]} dimensions")
    centred = data - data.mean(dim=0)
    variances, components = _top_eigen(centred.t() @ centred / (data.shape[0] - 1), num)  # [K], [K, D]
    num_layers, w_dim = generator.code_shape
    vectors = torch.zeros(num, num_layers, w_dim, dtype=torch.float64)
    if shared:
        vectors[:] = components[:, None]  # the paper's v in every row
        scales = variances.clamp(min=0).sqrt()  # moving all chosen rows by d·v moves the component by d
    else:
        s = len(chosen)
        vectors[:, chosen] = components.view(num, s, w_dim) * s ** 0.5  # RMS row norm 1 over the layers
        scales = variances.clamp(min=0).sqrt() / s ** 0.5
    return Directions("ganspace", vectors.float(), variances.float(), tuple(chosen), scales.float())


def pack_directions(pack, names: Sequence[str] | None = None) -> dict[str, Boundary]:
    """A pack's directions by name (``ModelPack.directions``, which owns the look-up)."""
    return pack.directions(names)


def find_directions(generator: CodeGenerator, method: str, **kwargs) -> Directions:
    """``sefa(generator, **kwargs)`` or ``ganspace(generator, **kwargs)``."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; use {' or '.join(METHODS)}")
    return (sefa if method == "sefa" else ganspace)(generator, **kwargs)


__all__ = ["Directions", "METHODS", "LAYER_WEIGHTS", "find_directions", "ganspace", "layer_weights",
           "pack_directions", "sample_prior_codes", "sefa"]
