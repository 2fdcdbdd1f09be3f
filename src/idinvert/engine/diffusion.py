"""Semantic diffusion (official ``diffuse.py``): paste a target's patch into a context and let the
generator blend it in.

For a target x_t, a context x_c and a square mask m (1 inside the patch), the stitched image is
``x = x_t·m + x_c·(1 − m)``. Starting from E(x), the code z minimises

    mean((x − G(z))²·m) + λ_vgg·mean((F(x·m) − F(G(z)·m))²)

(means over all pixels, no domain regulariser), so only the patch is constrained and the generator
re-synthesises the context region freely around it. The result is the full G(z). The optimisation
is the inversion engine's single loop: ``invert(..., mask=m)`` with λ_dom = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import ConfigError
from .inversion import InversionConfig, invert

REFERENCE_RESOLUTION = 256  # the official defaults below are for 256 px images
CROP_SIZE = 110  # s, side of the pasted square (--crop_size)
CENTER_X = 125  # column of the square's centre (--center_x)
CENTER_Y = 145  # row of the square's centre (--center_y)


@dataclass(frozen=True)
class CropBox:
    """The pasted square: rows ``top:top+size``, columns ``left:left+size``."""

    top: int  # yy = center_y − size//2
    left: int  # xx = center_x − size//2
    size: int  # s


def _scaled(value: int, resolution: int) -> int:
    return int(value * resolution / REFERENCE_RESOLUTION + 0.5)


def crop_box(resolution: int, *, crop_size: int | None = None, center_x: int | None = None,
             center_y: int | None = None) -> CropBox:
    """The official square (110 px centred at column 125, row 145 at 256 px; unset values scaled in
    proportion to ``resolution``). Raises ConfigError if it does not lie inside the image."""
    s = _scaled(CROP_SIZE, resolution) if crop_size is None else crop_size
    cx = _scaled(CENTER_X, resolution) if center_x is None else center_x
    cy = _scaled(CENTER_Y, resolution) if center_y is None else center_y
    box = CropBox(top=cy - s // 2, left=cx - s // 2, size=s)
    if s < 1 or box.top < 0 or box.left < 0 or box.top + s > resolution or box.left + s > resolution:
        raise ConfigError(f"the {s}×{s} crop centred at x={cx}, y={cy} does not fit inside the "
                          f"{resolution}×{resolution} image; choose a smaller --crop-size or move "
                          f"--center-x/--center-y")
    return box


def diffusion_mask(resolution: int, box: CropBox, *, device: torch.device | str | None = None) -> torch.Tensor:
    """``[1, 1, R, R]`` float mask, 1 inside the box (``mask[:, yy:yy+s, xx:xx+s] = 1``)."""
    mask = torch.zeros(1, 1, resolution, resolution, device=device)
    mask[:, :, box.top:box.top + box.size, box.left:box.left + box.size] = 1.0
    return mask


def stitch(targets: torch.Tensor, contexts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Every target's patch pasted into every context: ``[T, K, 3, R, R]``."""
    inside = mask.bool()[None]  # [1, 1, 1, R, R]
    return torch.where(inside, targets[:, None], contexts[None])


@dataclass
class DiffusionResult:
    """Diffused images for every (target, context) pair; images in [-1, 1] on the pack's device."""

    images: torch.Tensor  # [T, K, 3, R, R] G(z), the result
    codes: torch.Tensor  # [T, K, L, C] optimised codes z
    stitched: torch.Tensor  # [T, K, 3, R, R] the pasted inputs x
    encoder_images: torch.Tensor  # [T, K, 3, R, R] G(E(x)), the "encoder output"
    encoder_codes: torch.Tensor  # [T, K, L, C] E(x), the starting codes
    mask: torch.Tensor  # [1, 1, R, R] 1 = constrained
    box: CropBox
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # term → [steps, T, K]
    seconds: float = 0.0


def diffuse(targets: torch.Tensor, contexts: torch.Tensor, pack, *,
            crop_size: int | None = None,  # s; None = 110 at 256 px, scaled with the resolution
            center_x: int | None = None,  # patch centre column; None = 125 at 256 px, scaled
            center_y: int | None = None,  # patch centre row; None = 145 at 256 px, scaled
            steps: int = 100,  # Adam iterations (num_iterations)
            lr: float = 0.01,  # Adam learning rate (learning_rate)
            lambda_vgg: float | None = None,  # λ_vgg; None = the pack's calibrated value
            batch_size: int = 4,  # pairs optimised together (batch_size); results do not depend on it
            callback: Callable[[int, int, dict[str, torch.Tensor]], None] | None = None,
            ) -> DiffusionResult:
    """Diffuse each target ``[T, 3, R, R]`` into each context ``[K, 3, R, R]`` (both in [-1, 1])."""
    res = pack.resolution
    for name, x in (("targets", targets), ("contexts", contexts)):
        if x.ndim != 4 or x.shape[1:] != (3, res, res) or x.shape[0] == 0:
            raise ValueError(f"expected {name} [N, 3, {res}, {res}] in [-1, 1], got {list(x.shape)}")
    if pack.encoder is None:
        raise ConfigError(f"pack {pack.name!r} has no encoder, and diffusion starts from E(stitched image); "
                          f"use a pack with an encoder")
    box = crop_box(res, crop_size=crop_size, center_x=center_x, center_y=center_y)
    mask = diffusion_mask(res, box, device=pack.device)
    stitched = stitch(targets.to(pack.device), contexts.to(pack.device), mask)  # [T, K, 3, R, R]
    t, k = stitched.shape[:2]
    config = InversionConfig(method="in-domain", steps=steps, lr=lr, lambda_vgg=lambda_vgg, lambda_dom=0.0)
    result = invert(stitched.flatten(0, 1), pack, config, mask=mask, batch_size=batch_size, callback=callback)
    pairs = lambda x: x.reshape(t, k, *x.shape[1:])  # noqa: E731  [T·K, …] → [T, K, …]
    return DiffusionResult(
        images=pairs(result.reconstructions), codes=pairs(result.codes), stitched=stitched,
        encoder_images=pairs(result.encoder_reconstructions), encoder_codes=pairs(result.encoder_codes),
        mask=mask, box=box, losses={name: v.reshape(v.shape[0], t, k) for name, v in result.losses.items()},
        seconds=result.seconds)
