"""One entry point for StyleGAN2 weight files: NVIDIA snapshots and rosinality checkpoints, told apart
by their first bytes (a ``torch.save`` file, zip or legacy, is rosinality's; any other pickle NVIDIA's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..networks.stylegan2 import StyleGAN2Generator
from ..networks.stylegan2_discriminator import StyleGAN2Discriminator
from .nvidia import load_nvidia_snapshot
from .rosinality import load_rosinality_checkpoint

ZIP_MAGIC = b"PK\x03\x04"  # torch.save since torch 1.6
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."  # the magic number legacy torch.save pickles first


def stylegan2_file_format(path: str | Path) -> str:
    """``"rosinality"`` or ``"nvidia"`` from the file's first bytes; a CheckpointError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_TORCH_MAGIC))
    if head.startswith(ZIP_MAGIC) or head == LEGACY_TORCH_MAGIC:
        return "rosinality"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "nvidia"
    raise CheckpointError(f"{path}: neither a stylegan2-ada-pytorch snapshot (.pkl) nor a rosinality "
                          f"checkpoint (.pt)")


def load_stylegan2(path: str | Path, *, with_discriminator: bool = True
                   ) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator | None, dict[str, Any]]:
    """``(generator, discriminator or None, info)`` from either format, eval mode, on the CPU; ``info``
    names the format and what was read, ignored or estimated. No code from the file is run."""
    if stylegan2_file_format(path) == "rosinality":
        return load_rosinality_checkpoint(path, with_discriminator=with_discriminator)
    return load_nvidia_snapshot(path, with_discriminator=with_discriminator)
