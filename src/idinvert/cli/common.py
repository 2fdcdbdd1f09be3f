"""Options and helpers shared by the verbs: the common options, progress bars, and the library calls
that several verbs make with a progress bar (inverting photos, reading an invert folder, rendering)."""

from __future__ import annotations

import argparse
import math
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from ..engine.inversion import InversionConfig, InversionResult, default_batch_size, invert
from ..engine.invert_folder import CODES, Inverted, read_folder
from ..engine.tuned import TunedWeights, synthesize_tuned
from ..errors import ConfigError, ImageError, NonFiniteError
from ..images import expand_inputs, is_image_file, read_images, unique_names
from ..pack import ModelPack, load_pack
from ..parallel import resolve_device
from ..safety import check_int, check_seed


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


def batch_size_of(args: argparse.Namespace, pack: ModelPack, option: str = "--batch-size") -> int:
    """--batch-size when given (checked: 0 is not 'the default'), else ``default_batch_size(pack)``."""
    if getattr(args, "batch_size", None) is None:
        return default_batch_size(pack)
    return check_int(args.batch_size, option, 1, MAX_BATCH)


# --- library calls with a progress bar --------------------------------------------------------------

def run_inversion(args: argparse.Namespace, pack: ModelPack, images: torch.Tensor,
                  config: InversionConfig, batch_size: int, init_codes: torch.Tensor | None = None) -> InversionResult:
    """``invert`` with a progress bar over every batch's steps, seeded by ``--seed`` (default 0);
    ``init_codes`` ``[N, L, C]`` start the optimisation instead of the config's initialisation."""
    check_int(batch_size, "--batch-size", 1, MAX_BATCH)
    batches = (images.shape[0] + batch_size - 1) // batch_size
    steps = config.steps if config.optimises else 0
    with progress(args, batches * steps, f"{config.method} inversion") as bar:
        return invert(images, pack, config, batch_size=batch_size,
                      rng=torch.Generator().manual_seed(check_seed(getattr(args, "seed", 0))),
                      init_codes=init_codes, callback=lambda b, s, losses: bar.update(1))


def codes_from_inputs(args: argparse.Namespace, pack: ModelPack, inputs: list[str]) -> Inverted:
    """An invert folder, or image files/folders/lists inverted now with the default settings."""
    if len(inputs) == 1 and Path(inputs[0]).is_dir() and (Path(inputs[0]) / CODES).exists():
        return read_folder(Path(inputs[0]), pack)  # an invert folder (reading it says what is missing)
    paths = expand_inputs(inputs)
    bad = [p for p in paths if not is_image_file(p)]
    if bad:
        raise ImageError(f"{bad[0]}: expected an invert output folder or image files")
    images = read_images(paths, pack.resolution)
    try:
        result = run_inversion(args, pack, images, InversionConfig(), batch_size=default_batch_size(pack))
    except NonFiniteError:
        raise NonFiniteError(f"inverting {', '.join(map(str, inputs))} with the default settings gave a NaN/inf "
                             f"loss; check or rebuild the model pack {pack.path}, or run `idinvert invert` with "
                             f"a lower --lr and pass its folder") from None
    return Inverted(unique_names(paths), result.codes, images, ", ".join(map(str, inputs)))


def render(args: argparse.Namespace, pack: ModelPack, codes: torch.Tensor, desc: str,
           tuned: TunedWeights | None = None) -> torch.Tensor:
    """G(codes) for codes ``[..., L, C]`` with a progress bar; images on the CPU. With ``tuned``
    (N generators), codes ``[N, ..., L, C]`` row i go through image i's tuned generator."""
    count = int(np.prod(codes.shape[:-2]))
    batch = 8 if pack.device.type == "cuda" else 4
    with progress(args, count, desc) as bar:
        images = synthesize_tuned(pack.generator, tuned, codes, batch_size=batch, callback=bar.update).cpu()
    if not torch.isfinite(images).all():
        raise NonFiniteError(f"the model pack {pack.path} synthesises NaN/inf images; check or rebuild the pack")
    return images
