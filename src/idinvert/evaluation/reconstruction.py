"""Per-image reconstruction metrics of one inversion method (Table 1 of the paper).

For real images x and reconstructions G(z) (clipped to [-1, 1], what a saved file holds):
MSE and PSNR on [-1, 1] (``metrics.pixel``), SSIM, LPIPS with the VGG trunk, and the cosine
similarity of dlib face descriptors ("ID"). Each is kept per image so that means, spreads
and per-image plots come from one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..metrics import lpips_distance, mse, psnr, ssim
from ..metrics.identity import face_descriptors
from ..metrics.lpips import MIN_SIZE as LPIPS_MIN_SIZE
from ..metrics.pixel import SSIM_WINDOW

PAIR_METRICS = ("mse", "psnr", "ssim", "lpips", "identity")


@dataclass
class PairScores:
    """Per-image metric values accumulated over batches: name → list of floats."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, batch: torch.Tensor) -> None:
        self.values.setdefault(name, []).extend(float(v) for v in batch.detach().double().cpu())

    def mean(self, name: str) -> float | None:
        vals = [v for v in self.values.get(name, []) if math.isfinite(v)]
        return sum(vals) / len(vals) if vals else None

    def std(self, name: str) -> float | None:
        vals = [v for v in self.values.get(name, []) if math.isfinite(v)]
        if len(vals) < 2:
            return None
        mu = sum(vals) / len(vals)
        return math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1))

    def summary(self) -> dict[str, dict[str, float | None]]:
        """``{name: {"mean", "std", "count"}}`` (non-finite values, e.g. PSNR of a perfect copy, left out)."""
        return {name: {"mean": self.mean(name), "std": self.std(name), "count": len(vals)}
                for name, vals in self.values.items()}


def available_pair_metrics(resolution: int, *, lpips: bool, identity: bool) -> tuple[str, ...]:
    """The per-image metrics that images of this size allow (SSIM needs 11 px, LPIPS 32 px)."""
    names = ["mse", "psnr"]
    if resolution >= SSIM_WINDOW:
        names.append("ssim")
    if lpips and resolution >= LPIPS_MIN_SIZE:
        names.append("lpips")
    if identity:
        names.append("identity")
    return tuple(names)


@torch.no_grad()
def pair_metrics(real: torch.Tensor, fake: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The named metrics of each pair ``[B]``; images ``[B, 3, H, W]`` on one device, in [-1, 1]."""
    fake = fake.clamp(-1, 1)
    out: dict[str, torch.Tensor] = {}
    if "mse" in names:
        out["mse"] = mse(real, fake)
    if "psnr" in names:
        out["psnr"] = psnr(real, fake)
    if "ssim" in names:
        out["ssim"] = ssim(real, fake)
    if "lpips" in names:
        out["lpips"] = lpips_distance(real, fake, net="vgg")
    if "identity" in names:
        out["identity"] = torch.nn.functional.cosine_similarity(face_descriptors(real), face_descriptors(fake), dim=1)
    return out
