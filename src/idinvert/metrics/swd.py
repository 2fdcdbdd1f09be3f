"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al., PGGAN, ICLR 2018).

The IDInvert paper reports this metric (Table 2); PGGAN's settings are the defaults here:

- a Laplacian pyramid of each image with the 5×5 binomial filter ``[1 4 6 4 1]ᵀ[1 4 6 4 1]/256``
  (``cv2.pyrDown``/``pyrUp``, mirror padding without edge repetition), from the full resolution
  down to 16×16 (256 px → levels 256, 128, 64, 32, 16; the coarsest keeps its low-pass content);
- from every level of every image, 128 patches of 7×7 pixels at uniformly random positions lying
  wholly inside the level; each patch is a 3·7·7 = 147-d descriptor;
- per set and level, every colour channel of the descriptors normalised to zero mean and unit
  standard deviation (over all patches and pixels of that set and level);
- the 1-D Wasserstein-1 distance between the two descriptor sets projected on random unit
  directions (sorted projections, mean absolute difference), 4 repeats of 128 fresh directions
  (512 directions in all), averaged;
- reported ×1e3 per level, and the mean over levels ("SWD ×1e3", PGGAN's ``SWDx1e3_avg``).

Both sets must give the same number of descriptors per level; when the image counts differ,
the larger set's descriptors are subsampled at random to the smaller count. Patch positions are
drawn independently for the two sets, so a set compared with itself gives a sampling-noise floor
that shrinks as 1/√(patches), not 0: compare SWDs computed from the same numbers of images
(PGGAN used 16,384 per set). The stateful class keeps all descriptors until ``compute()``:
128·147 floats (75 KB) per image and level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)  # cv2.pyrDown taps, ×1/16 per axis


@dataclass(frozen=True)
class SWDConfig:
    patch_size: int = 7  # nhood_size of PGGAN
    patches_per_image: int = 128  # nhoods_per_image
    dir_repeats: int = 4  # dir_repeats: independent draws of directions
    dirs_per_repeat: int = 128  # dirs_per_repeat: directions per draw
    min_resolution: int = 16  # coarsest pyramid level (PGGAN: down to 16×16)
    scale: float = 1e3  # reported as SWD × 1e3


@dataclass(frozen=True)
class SWDResult:
    per_level: dict[int, float]  # level height → SWD × scale, finest first
    mean: float  # mean over levels


def _binomial_kernel(channels: int, gain: float, like: torch.Tensor) -> torch.Tensor:
    taps = torch.tensor(BINOMIAL_5, dtype=like.dtype, device=like.device) / 16.0
    return (torch.outer(taps, taps) * gain).expand(channels, 1, 5, 5)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur with the binomial filter (mirror padding) and keep every second pixel: ``[N, C, ⌈H/2⌉, ⌈W/2⌉]``."""
    c = x.shape[1]
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), _binomial_kernel(c, 1.0, x), groups=c)[:, :, ::2, ::2]


def pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-insert to twice the size, blur with 4× the binomial filter, crop to ``size``."""
    n, c, h, w = x.shape
    up = torch.zeros(n, c, 2 * h, 2 * w, dtype=x.dtype, device=x.device)
    up[:, :, ::2, ::2] = x
    up = F.conv2d(F.pad(up, (2, 2, 2, 2), mode="reflect"), _binomial_kernel(c, 4.0, x), groups=c)
    return up[:, :, :size[0], :size[1]]


def laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``levels`` band-pass images, finest first; the last is the low-pass residual.

    ``pyr_up`` of each level added to the finer band rebuilds the image exactly.
    """
    pyramid = [images.float()]
    for _ in range(1, levels):
        coarse = pyr_down(pyramid[-1])
        pyramid[-1] = pyramid[-1] - pyr_up(coarse, pyramid[-1].shape[2:])
        pyramid.append(coarse)
    return pyramid


def pyramid_levels(height: int, width: int, min_resolution: int) -> int:
    """Number of levels from the full size down to ``min_resolution`` (halving the smaller side)."""
    side, levels = min(height, width), 0
    while side >= min_resolution:
        levels += 1
        side //= 2
    if levels == 0:
        raise ValueError(f"SWD needs images of at least {min_resolution}×{min_resolution}, got {height}×{width}")
    return levels


def random_patches(level: torch.Tensor, count: int, size: int, generator: torch.Generator | None) -> torch.Tensor:
    """``count`` random ``size``×``size`` patches per image, wholly inside: ``[N·count, C, size, size]``."""
    n, _, h, w = level.shape
    if min(h, w) < size:
        raise ValueError(f"a {h}×{w} pyramid level is smaller than the {size}×{size} patches")
    half = size // 2
    image = torch.arange(n).repeat_interleave(count)
    ys = torch.randint(half, h - half, (n * count,), generator=generator)  # patch centres
    xs = torch.randint(half, w - half, (n * count,), generator=generator)
    offsets = torch.arange(-half, half + 1)
    rows = (ys[:, None] + offsets)[:, :, None]  # [K, size, 1]
    cols = (xs[:, None] + offsets)[:, None, :]  # [K, 1, size]
    index = [t.to(level.device) for t in (image[:, None, None], rows, cols)]
    return level[index[0], :, index[1], index[2]].permute(0, 3, 1, 2)  # [K, size, size, C] → [K, C, size, size]


def normalize_descriptors(patches: torch.Tensor) -> torch.Tensor:
    """Per-channel zero mean / unit std over all patches and pixels, flattened: ``[K, C·size²]``."""
    mean = patches.mean(dim=(0, 2, 3), keepdim=True)
    std = patches.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    return ((patches - mean) / std).flatten(1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, *, dir_repeats: int = 4, dirs_per_repeat: int = 128,
                       generator: torch.Generator | None = None) -> float:
    """Mean 1-D Wasserstein-1 distance of descriptors ``a``, ``b`` ``[K, D]`` over random unit directions."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected two descriptor sets [K, D] of one shape, got {list(a.shape)} and {list(b.shape)}")
    results = []
    for _ in range(dir_repeats):
        dirs = torch.randn(a.shape[1], dirs_per_repeat, generator=generator, dtype=torch.float64)
        dirs = (dirs / dirs.norm(dim=0, keepdim=True)).to(a.device, a.dtype)
        proj_a = torch.sort(a @ dirs, dim=0).values
        proj_b = torch.sort(b @ dirs, dim=0).values
        results.append(float((proj_a - proj_b).abs().mean()))
    return sum(results) / len(results)


class SlicedWassersteinDistance:
    """SWD accumulated over batches: ``update(images, real=True|False)`` then ``compute()``.

    Images ``[N, 3, H, W]`` in [-1, 1], the same size throughout; ``generator`` (CPU) draws the
    patch positions and projection directions (seed it for reproducible values).

    >>> swd = SlicedWassersteinDistance(generator=torch.Generator().manual_seed(0))
    >>> x = torch.rand(4, 3, 32, 32) * 2 - 1
    >>> swd.update(x, real=True); swd.update(x.flip(3), real=False)
    >>> sorted(swd.compute().per_level)
    [16, 32]
    """

    def __init__(self, config: SWDConfig = SWDConfig(), *, generator: torch.Generator | None = None) -> None:
        self.config = config
        self.generator = generator
        self.reset()

    def reset(self) -> None:
        self.shape: tuple[int, ...] | None = None  # (C, H, W) of every image
        self.level_heights: list[int] = []
        self.real: list[list[torch.Tensor]] = []  # [level][batch] → patches [K, C, s, s]
        self.fake: list[list[torch.Tensor]] = []

    @torch.no_grad()
    def update(self, images: torch.Tensor, *, real: bool) -> None:
        if images.ndim != 4:
            raise ValueError(f"expected images [N, C, H, W], got {list(images.shape)}")
        shape = tuple(images.shape[1:])
        if self.shape is None:
            self.shape = shape
            levels = pyramid_levels(shape[1], shape[2], self.config.min_resolution)
            self.real, self.fake = [[] for _ in range(levels)], [[] for _ in range(levels)]
        elif shape != self.shape:
            raise ValueError(f"all images must have one size: got {list(shape)} after {list(self.shape)}")
        store = self.real if real else self.fake
        c = self.config
        pyramid = laplacian_pyramid(images, len(store))
        self.level_heights = [level.shape[2] for level in pyramid]
        for i, level in enumerate(pyramid):
            store[i].append(random_patches(level, c.patches_per_image, c.patch_size, self.generator).cpu())

    def compute(self) -> SWDResult:
        if self.shape is None or not self.real[0] or not self.fake[0]:
            raise ValueError("SWD needs both real and generated images: call update(..., real=True/False)")
        c = self.config
        per_level = {}
        for i, (real, fake) in enumerate(zip(self.real, self.fake, strict=True)):
            a, b = normalize_descriptors(torch.cat(real)), normalize_descriptors(torch.cat(fake))
            k = min(a.shape[0], b.shape[0])
            a, b = (d if d.shape[0] == k else d[torch.randperm(d.shape[0], generator=self.generator)[:k]]
                    for d in (a, b))
            distance = sliced_wasserstein(a, b, dir_repeats=c.dir_repeats, dirs_per_repeat=c.dirs_per_repeat,
                                          generator=self.generator)
            per_level[self.level_heights[i]] = distance * c.scale
        return SWDResult(per_level=per_level, mean=sum(per_level.values()) / len(per_level))


def swd_from_images(real: torch.Tensor, fake: torch.Tensor, config: SWDConfig = SWDConfig(), *,
                    generator: torch.Generator | None = None) -> SWDResult:
    """SWD between two image sets held in memory (see ``SlicedWassersteinDistance``)."""
    metric = SlicedWassersteinDistance(config, generator=generator)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return metric.compute()
