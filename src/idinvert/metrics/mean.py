"""A running mean of a per-pair metric over batches (a test set evaluated batch by batch)."""

from __future__ import annotations

from typing import Callable

import torch

PairMetric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # ([N,C,H,W], [N,C,H,W]) → [N]


class PairedMean:
    """Mean over all image pairs seen by ``update`` of a per-pair metric (MSE, PSNR, SSIM, LPIPS …).

    The mean is over pairs, so for PSNR it is the mean of per-image PSNRs, not the PSNR of the
    mean MSE.

    >>> from idinvert.metrics import mse
    >>> m = PairedMean(mse)
    >>> x = torch.zeros(2, 3, 4, 4)
    >>> m.update(x, x + 0.5); m.update(x[:1], x[:1] + 1.0)
    >>> m.compute()
    0.5
    """

    def __init__(self, metric: PairMetric) -> None:
        self.metric = metric
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    @torch.no_grad()
    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Add a batch of pairs ``[N, C, H, W]``."""
        values = self.metric(a, b)
        self.total += float(values.double().sum())
        self.count += values.numel()

    def compute(self) -> float:
        if self.count == 0:
            raise ValueError("no pairs: call update() first")
        return self.total / self.count
