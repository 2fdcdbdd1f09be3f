"""Editing in W+: interpolation, manipulation along a boundary and style mixing.

All functions take W+ codes ``[N, L, C]`` (``L`` synthesis layers of ``C`` channels, as produced by
``idinvert.invert``) and return codes; ``synthesize`` (``engine.tuned``) turns any batch of codes into
images. They follow the official applications (``interpolate.py``, ``manipulate.py``, ``mix_style.py``):

- interpolation: ``src + l·(dst − src)`` for ``l = linspace(0, 1, steps + 2)``, in every layer;
- manipulation: ``wp'[l] = wp[l] + d·b[l]`` on the chosen layers only, for each distance d;
- style mixing: the content code with its layers ≥ k replaced by the style code's;
- local steps (beyond the paper): per image, the code change nearest a boundary's step that, to first
  order, leaves the pixels outside one region of the face alone (``local_steps``, ``outside_ellipse``).

Boundaries and their files are ``idinvert.boundaries``; this module hands on their public names
(``Boundary``, ``load_boundary``, ``save_boundary``, ``parse_layers``) and ``synthesize``, which users
of ``idinvert.editing`` import from here.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..boundaries import Boundary, fit_boundary, load_boundary, parse_layers, save_boundary
from ..errors import BoundaryError, ConfigError
from .tuned import TunedWeights, synthesize, synthesize_tuned

OFFICIAL_LAYERS = 14  # synthesis layers of the official 256 px models
OFFICIAL_MIX_START = 10  # --mix_layer_start_idx of mix_style.py: layers 10–13 (128², 256²) from the style
DEFAULT_DISTANCES = (-3.0, 3.0, 7)  # --start_distance, --end_distance, --step of manipulate.py
LOCAL_MAX_CODE = 1024  # local steps measure every code number's effect: codes of at most this many numbers
LOCAL_PROBE = 0.05  # code offset of the central differences that measure that effect


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


# --- local steps ---------------------------------------------------------------------------------

def outside_ellipse(size: int, center: tuple[float, float], radii: tuple[float, float]) -> torch.Tensor:
    """Pixel weights ``[size, size]``: 1 outside the ellipse at ``center`` (x, y as fractions of the image)
    with half-axes ``radii`` (fractions of the image), 0 inside — the part of a face a local edit keeps."""
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    inside = ((x - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2 <= 1
    return (~inside).float()


def local_steps(generator, codes: torch.Tensor, step: torch.Tensor, keep: torch.Tensor, *,
                tuned: TunedWeights | None = None, stiffness: float = 0.03, batch_size: int = 64) -> torch.Tensor:
    """Per image, a step ``[N, L, C]`` that moves along ``step`` as much as ``step`` does but changes the
    pixels weighted by ``keep`` as little as it can, to first order.

    A boundary's step ``n`` (``[L, C]``, the change of an edit by d = 1) changes the whole image: along a
    smile boundary of a small generator the eyes, the hair and the face's shape move with the mouth. With
    ``J`` the Jacobian of image i's rendering (through its tuned generator when ``tuned`` is given) at its
    code, measured by central differences, and ``K`` the pixel weights ``keep`` ``[R, R]``::

        v = argmin ‖K·J·v‖² + ε‖v‖²  subject to  ⟨v, n⟩ = ⟨n, n⟩
          = M⁻¹n · ⟨n, n⟩ / ⟨n, M⁻¹n⟩,   M = (K·J)ᵀ(K·J) + ε·I,   ε = stiffness · mean(diag((K·J)ᵀ(K·J)))

    so that ``codes + d·v`` is as far along the boundary's normal as ``codes + d·n``. A large
    ``stiffness`` gives back ``n``; a small one follows the region more closely but holds only near the
    code (the change is linear in v, the generator is not). Codes of more than ``LOCAL_MAX_CODE`` numbers
    (a StyleGAN's W+) are refused in one line: the Jacobian costs two renderings per number.
    """
    _check_codes(codes, "codes")
    n, (layers, channels) = codes.shape[0], codes.shape[1:]
    size = layers * channels
    if size > LOCAL_MAX_CODE:
        raise ConfigError(f"local edits measure each code number's effect on the image; these codes have {size} "
                          f"numbers (at most {LOCAL_MAX_CODE}): edit along the boundary instead")
    if not (isinstance(stiffness, (int, float)) and 0 < stiffness < float("inf")):
        raise ConfigError(f"the stiffness of a local edit must be a positive number, got {stiffness}")
    step = step.to(codes).reshape(size)
    keep = keep.to(codes).flatten()
    probe = LOCAL_PROBE * torch.eye(size, dtype=codes.dtype, device=codes.device).view(size, layers, channels)
    out = []
    for i in range(n):
        around = torch.cat([codes[i] + probe, codes[i] - probe])[None]  # [1, 2·size, L, C]
        if tuned is None:
            images = synthesize(generator, around[0], batch_size=batch_size)
        else:
            images = synthesize_tuned(generator, tuned.select([i]), around, batch_size=batch_size)[0]
        images = images.to(codes).flatten(2)  # [2·size, 3, R·R]
        jacobian = ((images[:size] - images[size:]) / (2 * LOCAL_PROBE) * keep).flatten(1)  # [size, 3·R·R]
        m = jacobian @ jacobian.T
        m += stiffness * m.diagonal().mean().clamp_min(1e-12) * torch.eye(size, dtype=m.dtype, device=m.device)
        v = torch.linalg.solve(m, step)
        out.append(v * (step @ step) / (step @ v))
    return torch.stack(out).view(n, layers, channels)


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
           "local_steps", "manipulate", "mix", "outside_ellipse", "parse_layers", "save_boundary", "synthesize"]
