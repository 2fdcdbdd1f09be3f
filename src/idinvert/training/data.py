"""Training batches from a prepared data set (``idinvert.datasets``).

``BatchSampler`` draws batches deterministically from a seed and a cursor (images consumed
so far): epoch ``e`` is a permutation seeded by ``(seed, e)`` and the mirror flips of a batch
are seeded by its cursor, so resuming from a saved cursor reproduces the exact data order.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from ..datasets import ImageDataset


def seeded(*parts: int) -> torch.Generator:
    """A torch.Generator seeded by a tuple of integers (order-sensitive)."""
    h = hashlib.sha256(np.asarray(parts, dtype=np.int64).tobytes()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))


class BatchSampler:
    """Deterministic, resumable batches: indices and mirror flags from ``(seed, cursor)``."""

    def __init__(self, size: int, *, seed: int, mirror: bool) -> None:
        self.size, self.seed, self.mirror = size, seed, mirror
        self._perm_epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = torch.randperm(self.size, generator=seeded(self.seed, epoch)).numpy()
            self._perm_epoch = epoch
        return self._perm

    def indices(self, cursor: int, batch: int) -> np.ndarray:
        out = []
        while len(out) < batch:
            epoch, offset = divmod(cursor, self.size)
            take = min(batch - len(out), self.size - offset)
            out.extend(self.permutation(epoch)[offset:offset + take].tolist())
            cursor += take
        return np.asarray(out, dtype=np.int64)

    def flips(self, cursor: int, batch: int) -> torch.Tensor:
        if not self.mirror:
            return torch.zeros(batch, dtype=torch.bool)
        return torch.rand(batch, generator=seeded(self.seed, -1, cursor)) < 0.5


def load_batch(dataset: ImageDataset, sampler: BatchSampler, cursor: int, batch: int,
               *, resolution: int | None = None) -> torch.Tensor:
    """Batch ``[B, 3, r, r]`` in [-1, 1] starting at ``cursor``, mirrored, box-downsampled to ``r``."""
    x = dataset.batch(sampler.indices(cursor, batch))
    flips = sampler.flips(cursor, batch)
    if flips.any():
        x[flips] = x[flips].flip(3)
    if resolution is not None and resolution != x.shape[2]:
        x = F.avg_pool2d(x, x.shape[2] // resolution)
    return x
