"""Operations on inverted codes that the evaluation needs: random pairs, midpoints, projections.

- Table 2, interpolation: the code halfway between the inverted codes of a random pair of real
  images, ``z = (z_a + z_b)/2`` in every layer (``editing.interpolate`` with one intermediate step).
- Table 2, manipulation: each code moved by ±d along a boundary on its layers (``editing.manipulate``).
- Fig. 3: how far a code lies along a boundary, ``s = Σ_{l ∈ layers} ⟨z[l], b[l]⟩``: a linear
  classifier of the attribute that reads the code alone (the boundary rows are unit normals of
  per-layer linear SVMs, so the sum over the boundary's manipulate_layers is their joint score).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..boundaries import Boundary, parse_layers
from ..engine.editing import interpolate, manipulate


def random_pairs(n: int, count: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` ordered pairs ``(a, b)`` of distinct indices below ``n``, drawn uniformly: ``[P, 2]``.

    >>> random_pairs(5, 3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    if n < 2:
        raise ValueError(f"pairs need at least 2 images, got {n}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    first = torch.randint(0, n, (count,), generator=generator)
    offset = torch.randint(1, n, (count,), generator=generator)  # b = a + offset (mod n) ≠ a
    return torch.stack([first, (first + offset) % n], dim=1)


def midpoints(codes: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """The code halfway between each pair's codes: codes ``[N, L, C]``, pairs ``[P, 2]`` → ``[P, L, C]``."""
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"expected pairs [P, 2], got {list(pairs.shape)}")
    pairs = pairs.to(codes.device)
    # steps=1: the official interpolation at l ∈ {0, 0.5, 1}; the middle code is the midpoint.
    return interpolate(codes[pairs[:, 0]], codes[pairs[:, 1]], steps=1, pairwise=True)[:, 1]


def boundary_layers(boundary: Boundary, num_layers: int) -> list[int]:
    """The layers a boundary moves: its manipulate_layers, else all."""
    return parse_layers(boundary.layers, num_layers)


def boundary_projection(codes: torch.Tensor, boundary: Boundary) -> torch.Tensor:
    """``Σ_{l ∈ layers} ⟨codes[:, l], b[l]⟩``: codes ``[N, L, C]`` → ``[N]`` (float32)."""
    if codes.ndim != 3:
        raise ValueError(f"expected codes [N, L, C], got {list(codes.shape)}")
    num_layers, w_dim = codes.shape[1:]
    direction = boundary.direction.to(codes.device, torch.float32).expand(num_layers, w_dim)  # [L, C]
    layers = boundary_layers(boundary, num_layers)
    return (codes.float()[:, layers] * direction[layers]).sum(dim=(1, 2))


def manipulation_codes(codes: torch.Tensor, boundary: Boundary, distances: Sequence[float]) -> torch.Tensor:
    """Codes ``[N, L, C]`` moved by each distance on the boundary's layers: ``[N, K, L, C]``."""
    return manipulate(codes, boundary, distances=torch.tensor(list(distances), dtype=torch.float32))
