"""``idinvert compare A B``: one similarity metric between two image files, printed on stdout.

Both images are read at their own size (no square crop). When B's size differs from A's, B is
resized to A's width and height with Lanczos resampling (its aspect ratio is not preserved):
the order of the two files chooses the size at which they are compared.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import torch

from ..errors import ImageError
from ..images import RESAMPLE, open_image, pil_to_tensor
from ..metrics import identity_similarity, lpips_distance, mse, psnr, ssim
from ..metrics.lpips import MIN_SIZE as LPIPS_MIN_SIZE
from ..metrics.pixel import SSIM_WINDOW
from .common import add_device, device_of

METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": mse,
    "psnr": psnr,
    "ssim": ssim,
    "lpips": lambda a, b: lpips_distance(a, b, net="vgg"),
    "lpips-alex": lambda a, b: lpips_distance(a, b, net="alex"),
    "id": identity_similarity,
}
MIN_SIZE = {"ssim": SSIM_WINDOW, "lpips": LPIPS_MIN_SIZE, "lpips-alex": LPIPS_MIN_SIZE}
DEFAULT_METRIC = "lpips"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="print a similarity metric between two images",
                       description="Print one metric between image A and image B (B is resized to A's size "
                                   "when they differ). mse: mean squared error on [-1, 1]; psnr: dB with "
                                   "peak-to-peak 2; ssim: Gaussian window 11, σ=1.5, mean over RGB; lpips: "
                                   "LPIPS v0.1, VGG16 trunk; lpips-alex: LPIPS v0.1, AlexNet trunk; id: cosine "
                                   "similarity of dlib face descriptors (needs dlib-bin and "
                                   "face_recognition_models).")
    p.add_argument("a", type=Path, metavar="A", help="first image (sets the size)")
    p.add_argument("b", type=Path, metavar="B", help="second image")
    p.add_argument("--metric", choices=tuple(METRICS), default=DEFAULT_METRIC,
                   help=f"which metric (default {DEFAULT_METRIC}: LPIPS with the VGG trunk)")
    add_device(p)
    p.set_defaults(run=run)


def read_pair(path_a: Path, path_b: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Two image files → ``[1, 3, H, W]`` each in [-1, 1], B resized to A's size if needed."""
    img_a, img_b = open_image(path_a), open_image(path_b)
    if img_b.size != img_a.size:
        img_b = img_b.resize(img_a.size, RESAMPLE)
    return pil_to_tensor(img_a)[None], pil_to_tensor(img_b)[None]


def compare(a: torch.Tensor, b: torch.Tensor, metric: str) -> float:
    """The metric of one pair ``[1, 3, H, W]``, with a one-line error for images it cannot take."""
    smallest = MIN_SIZE.get(metric, 1)
    if min(a.shape[2:]) < smallest:
        raise ImageError(f"{metric} needs images of at least {smallest}×{smallest} pixels; "
                         f"A is {a.shape[3]}×{a.shape[2]}")
    with torch.no_grad():
        return float(METRICS[metric](a, b)[0])


def run(args: argparse.Namespace) -> int:
    a, b = read_pair(args.a, args.b)
    device = device_of(args)
    print(f"{compare(a.to(device), b.to(device), args.metric):.6f}")
    return 0
