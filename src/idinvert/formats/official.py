"""Reading the officially released IDInvert weights (``genforce/idinvert_pytorch``).

``styleganinv_{ffhq,tower,bedroom}256_generator.pth``, ``..._encoder.pth`` and ``vgg16.pth``
are plain state_dicts. They are read with ``torch.load(weights_only=True)`` (no code runs)
and loaded strictly: every key and shape must match, and an error names the file and the
missing, unexpected or mis-shaped keys. Configurations are inferred from the shapes, so
files of other resolutions and widths in the same format load too.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..networks import DomainGuidedEncoder, StyleGANGenerator, VGG16Features
from ..networks.config import EncoderConfig, GeneratorConfig
from .common import load_strict, read_state_dict

#: Buffers the official files may carry that are always recomputed from the configuration.
IGNORED_GENERATOR_KEYS = ("truncation.truncation",)


def _require(state: dict, key: str, source: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"{source} is not a StyleGAN/IDInvert weight file of this kind (no {key})")
    return state[key]


def infer_generator_config(state: dict[str, torch.Tensor], source: str = "state_dict") -> GeneratorConfig:
    """The ``GeneratorConfig`` that an official-format generator state_dict was built with."""
    dense0 = _require(state, "mapping.dense0.fc.weight", source)
    mapping_layers = len([k for k in state if re.fullmatch(r"mapping\.dense\d+\.fc\.weight", k)])
    w_dim = _require(state, "synthesis.layer0.epilogue.style_mod.dense.fc.weight", source).shape[1]
    num_layers = len([k for k in state if re.fullmatch(r"synthesis\.layer\d+\.epilogue\.bias", k)])
    resolution = 2 ** (num_layers // 2 + 1)
    top = state.get(f"synthesis.layer{num_layers - 1}.epilogue.bias")
    const = _require(state, "synthesis.layer0.const", source)
    if top is None:
        raise CheckpointError(f"{source}: synthesis layers are not numbered 0..{num_layers - 1}")
    fmaps_max = const.shape[1]
    fmaps_base = top.shape[0] * resolution
    fused = [2 ** (i // 2 + 2) for i in range(2, num_layers, 2) if f"synthesis.layer{i}.weight" in state]
    rgb = _require(state, "synthesis.output0.conv.weight", source)
    return GeneratorConfig(resolution=resolution, z_dim=dense0.shape[1], w_dim=w_dim,
                           mapping_layers=mapping_layers, mapping_fmaps=dense0.shape[0],
                           fmaps_base=fmaps_base, fmaps_max=fmaps_max,
                           fused_min_resolution=min(fused) if fused else 2 * resolution,
                           image_channels=rgb.shape[0])


def infer_encoder_config(state: dict[str, torch.Tensor], *, num_layers: int, w_dim: int,
                         source: str = "state_dict") -> EncoderConfig:
    """The ``EncoderConfig`` of an official-format encoder state_dict, for a given code shape."""
    stem = _require(state, "block0.conv.weight", source)
    blocks = len([k for k in state if re.fullmatch(r"block\d+\.bn2\.bn\.bias", k)])
    fc = state.get(f"block{blocks + 1}.fc.weight")
    if fc is None:
        raise CheckpointError(f"{source} is not an IDInvert encoder file (no block{blocks + 1}.fc.weight)")
    if fc.shape[0] != num_layers * w_dim:
        raise CheckpointError(f"{source} predicts {fc.shape[0]} values per image, but the generator needs "
                              f"{num_layers}×{w_dim} = {num_layers * w_dim}; use the matching generator")
    widths = [state[f"block{b}.bn2.bn.bias"].shape[0] for b in range(1, blocks + 1)]
    return EncoderConfig(resolution=2 ** (blocks + 2), num_layers=num_layers, w_dim=w_dim,
                         channels_base=stem.shape[0], channels_max=max(widths + [stem.shape[0]]),
                         image_channels=stem.shape[1])


def load_official_generator(path: str | Path) -> StyleGANGenerator:
    state = read_state_dict(path)
    for key in IGNORED_GENERATOR_KEYS:
        state.pop(key, None)
    generator = StyleGANGenerator(infer_generator_config(state, str(path)))
    return load_strict(generator, state, str(path)).eval()


def load_official_encoder(path: str | Path, generator: StyleGANGenerator) -> DomainGuidedEncoder:
    state = read_state_dict(path)
    config = infer_encoder_config(state, num_layers=generator.num_layers, w_dim=generator.w_dim,
                                  source=str(path))
    return load_strict(DomainGuidedEncoder(config), state, str(path)).eval()


def load_official_vgg(path: str | Path) -> VGG16Features:
    """The official ``vgg16.pth`` (Keras/Caffe weights): Caffe input convention."""
    return load_strict(VGG16Features("caffe"), read_state_dict(path), str(path)).eval()
