"""Options and helpers shared by the verbs."""

from __future__ import annotations

import argparse
import math
import re
import sys
from contextlib import contextmanager
from typing import Iterator

import torch
from tqdm import tqdm

from ..errors import ConfigError
from ..pack import ModelPack, load_pack
from ..safety import check_int
from ..training.common import resolve_device


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … or auto (CUDA when present)")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress output (for scripts)")


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="PACK",
                        help="model pack folder (default: the bundled default pack)")


DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,3})?")


def device_of(args: argparse.Namespace) -> torch.device:
    """--device as a torch device that can run the networks: auto, cpu, cuda or cuda:N."""
    text = str(args.device)
    if not DEVICE.fullmatch(text):
        raise ConfigError(f"--device {text[:40]}: use auto, cpu, cuda or cuda:N (idinvert runs on CPUs and "
                          f"CUDA GPUs)")
    device = resolve_device(text)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {args.device}: this computer has {torch.cuda.device_count()} CUDA "
                          f"device(s), numbered from 0")
    return device


def open_pack(args: argparse.Namespace, **kwargs) -> ModelPack:
    return load_pack(args.model, device=device_of(args), **kwargs)


def info(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


@contextmanager
def progress(args: argparse.Namespace, total: int, desc: str) -> Iterator[tqdm]:
    """A progress bar on stderr, silent with --quiet (and for work under a second, tqdm's mininterval)."""
    bar = tqdm(total=total, desc=desc, disable=getattr(args, "quiet", False) or total == 0,
               file=sys.stderr, dynamic_ncols=True, mininterval=0.5, delay=1.0)
    try:
        yield bar
    finally:
        bar.close()


MAX_LR = 1e6  # far above any useful rate; Adam's first step (10·lr) must stay a finite float32


def check_lr(lr: float) -> float:
    """--lr as a positive, finite learning rate (a huge one overflows Adam's update with a traceback)."""
    if not (math.isfinite(lr) and 0 < lr <= MAX_LR):
        raise ConfigError(f"--lr {lr:g}: use a positive learning rate up to {MAX_LR:g} (the default is 0.01)")
    return lr


def parse_pair(text: str, name: str, limit: float = float("inf")) -> tuple[float, float]:
    """Two finite numbers ``A,B`` with |A|, |B| ≤ limit."""
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{name} takes two numbers like -3,3; got {text[:40]!r}") from None
    if not all(math.isfinite(v) and abs(v) <= limit for v in (a, b)):
        raise ConfigError(f"{name} {text[:40]}: use two finite numbers from {-limit:g} to {limit:g}, like -3,3")
    return a, b


MAX_BATCH = 4096  # images optimised together; memory grows with it
SMALL_PACK = 64  # resolution up to which a CPU inverts faster per image in batches
CPU_SMALL_BATCH = 16  # the batch size for such packs on a CPU (benchmarks/results/inversion_speed_cpu.md)


def default_batch_size(pack: ModelPack) -> int:
    """Images optimised together unless told otherwise: 8 on a GPU; on a CPU 16 for packs of at most
    64 px (1.4× the images per second of batch 1 there) and 1 for larger ones (batching is slower
    per image at 256 px). Measured in benchmarks/results/inversion_speed_cpu.md."""
    if pack.device.type != "cpu":
        return 8
    return CPU_SMALL_BATCH if pack.resolution <= SMALL_PACK else 1


def batch_size_of(args: argparse.Namespace, pack: ModelPack, option: str = "--batch-size") -> int:
    """--batch-size when given (checked: 0 is not 'the default'), else ``default_batch_size(pack)``."""
    if getattr(args, "batch_size", None) is None:
        return default_batch_size(pack)
    return check_int(args.batch_size, option, 1, MAX_BATCH)
