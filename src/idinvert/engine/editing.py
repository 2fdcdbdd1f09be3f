"""Editing in W+: interpolation, manipulation along a boundary and style mixing.

All functions take W+ codes ``[N, L, C]`` (``L`` synthesis layers of ``C`` channels, as produced by
``idinvert.invert``) and return codes; ``synthesize`` (``engine.tuned``) turns any batch of codes into
images. They follow the official applications (``interpolate.py``, ``manipulate.py``, ``mix_style.py``):

- interpolation: ``src + l·(dst − src)`` for ``l = linspace(0, 1, steps + 2)``, in every layer;
- manipulation: ``wp'[l] = wp[l] + d·b[l]`` on the chosen layers only, for each distance d;
- style mixing: the content code with its layers ≥ k replaced by the style code's.

Boundaries and their files are ``idinvert.boundaries``; this module hands on their public names
(``Boundary``, ``load_boundary``, ``save_boundary``, ``parse_layers``) and ``synthesize``, which users
of ``idinvert.editing`` import from here.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..boundaries import Boundary, fit_boundary, load_boundary, parse_layers, save_boundary
from ..errors import BoundaryError, ConfigError
from .tuned import synthesize

OFFICIAL_LAYERS = 14  # synthesis layers of the official 256 px models
OFFICIAL_MIX_START = 10  # --mix_layer_start_idx of mix_style.py: layers 10–13 (128², 256²) from the style
DEFAULT_DISTANCES = (-3.0, 3.0, 7)  # --start_distance, --end_distance, --step of manipulate.py


# --- interpolation --------------------------------------------------------------------------------

def interpolate(src_codes: torch.Tensor, dst_codes: torch.Tensor, *, steps: int = 5,
                pairwise: bool = False) -> torch.Tensor:
    """Codes on the straight line from each source to each target, endpoints included.

    src_codes ``[N, L, C]``, dst_codes ``[M, L, C]``; ``steps`` intermediate codes (``--step``).
    Returns ``[N, M, steps + 2, L, C]`` for every (source, target) pair, or ``[N, steps + 2, L, C]``
    with ``pairwise=True`` (source i with target i, N = M). The first code of each row equals the
    source and the last the target exactly.
    """
    _check_codes(src_codes, "src_codes")
    _check_codes(dst_codes, "dst_codes")
    if src_codes.shape[1:] != dst_codes.shape[1:]:
        raise ValueError(f"source codes {list(src_codes.shape)} and target codes {list(dst_codes.shape)} "
                         f"come from different models")
    if steps < 0:
        raise ConfigError(f"steps must be ≥ 0; got {steps}")
    weights = torch.linspace(0, 1, steps + 2, device=src_codes.device, dtype=src_codes.dtype)
    if pairwise:
        if src_codes.shape[0] != dst_codes.shape[0]:
            raise ValueError(f"pairwise interpolation needs as many sources as targets "
                             f"({src_codes.shape[0]} ≠ {dst_codes.shape[0]})")
        src, dst, w = src_codes[:, None], dst_codes[:, None], weights.view(1, -1, 1, 1)
    else:
        src, dst, w = src_codes[:, None, None], dst_codes[None, :, None], weights.view(1, 1, -1, 1, 1)
    # torch.lerp computes src + w·(dst − src) and returns dst exactly at w = 1.
    shape = torch.broadcast_shapes(src.shape, dst.shape, w.shape)
    return torch.lerp(src.expand(shape), dst.expand(shape), w.expand(shape))


# --- manipulation ---------------------------------------------------------------------------------

def manipulate(codes: torch.Tensor, boundary: Boundary | torch.Tensor, *,
               distances: Sequence[float] | torch.Tensor | None = None,
               layers: str | Sequence[int] | None = None) -> torch.Tensor:
    """Move codes along a boundary: ``wp'[l] = wp[l] + d·b[l]`` for l in ``layers``, others unchanged.

    codes ``[N, L, C]``; boundary a ``Boundary`` or a tensor ``[1, C]`` / ``[1, L, C]``; distances
    default to ``linspace(-3, 3, 7)``; layers as for ``parse_layers`` (None: the boundary's own
    layers, else all). Returns ``[N, K, L, C]`` for the K distances.
    """
    _check_codes(codes, "codes")
    code_shape = (codes.shape[1], codes.shape[2])
    if not isinstance(boundary, Boundary):
        boundary = Boundary(fit_boundary(boundary, code_shape))
    direction = boundary.direction  # [1, C] or [L, C]
    if direction.ndim != 2 or direction.shape[0] not in (1, code_shape[0]) or direction.shape[1] != code_shape[1]:
        raise BoundaryError(f"a boundary direction {list(direction.shape)} does not fit codes {list(code_shape)}; "
                            f"expected [1, {code_shape[1]}] or {list(code_shape)}")
    selected = parse_layers(boundary.layers if layers is None else layers, code_shape[0])
    if distances is None:
        start, end, count = DEFAULT_DISTANCES
        distances = torch.linspace(start, end, count)
    d = torch.as_tensor(distances, dtype=codes.dtype).to(codes.device).flatten()  # [K]
    b = direction.to(codes).expand(code_shape)[selected]  # [S, C]
    out = codes[:, None].repeat(1, d.shape[0], 1, 1)  # [N, K, L, C]
    out[:, :, selected] += d.view(1, -1, 1, 1) * b[None, None]
    return out


# --- style mixing ---------------------------------------------------------------------------------

def default_mix_layer_start(num_layers: int) -> int:
    """The first layer taken from the style code: 10 of 14 officially.

    The official split keeps the same *fraction* of the synthesis depth for the content (10/14:
    every resolution up to 64² at 256 px). Other depths keep that fraction, rounded to a whole
    resolution block (two layers per resolution), since both layers of a block act at one scale:
    6 of 8 at 32 px, 8 of 10 at 64 px, 12 of 16 at 512 px.
    """
    blocks = num_layers / 2
    return 2 * round(blocks * OFFICIAL_MIX_START / OFFICIAL_LAYERS)


def mix(style_codes: torch.Tensor, content_codes: torch.Tensor, layer_start: int | None = None) -> torch.Tensor:
    """Style mixing: each content code with its layers ≥ ``layer_start`` taken from each style code.

    style_codes ``[S, L, C]``, content_codes ``[K, L, C]`` → ``[S, K, L, C]``.
    """
    _check_codes(style_codes, "style_codes")
    _check_codes(content_codes, "content_codes")
    if style_codes.shape[1:] != content_codes.shape[1:]:
        raise ValueError(f"style codes {list(style_codes.shape)} and content codes {list(content_codes.shape)} "
                         f"come from different models")
    num_layers = content_codes.shape[1]
    if num_layers < 2:
        raise ConfigError("style mixing needs layer-wise (W+) codes; these codes have a single row (L = 1): "
                          "use a StyleGAN pack")
    k = default_mix_layer_start(num_layers) if layer_start is None else layer_start
    if not 0 <= k <= num_layers:
        raise ConfigError(f"layer start {k} is outside 0-{num_layers} for a {num_layers}-layer model")
    out = content_codes[None].repeat(style_codes.shape[0], 1, 1, 1)  # [S, K, L, C]
    out[:, :, k:] = style_codes[:, None, k:]
    return out


def _check_codes(codes: torch.Tensor, name: str) -> None:
    if not isinstance(codes, torch.Tensor) or codes.ndim != 3:
        raise ValueError(f"{name} must be W+ codes [N, L, C]; got "
                         f"{list(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__}")


__all__ = ["Boundary", "DEFAULT_DISTANCES", "default_mix_layer_start", "interpolate", "load_boundary",
           "manipulate", "mix", "parse_layers", "save_boundary", "synthesize"]
