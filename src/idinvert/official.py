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
from torch import nn

from .config import EncoderConfig, GeneratorConfig
from .errors import CheckpointError
from .networks import DomainGuidedEncoder, StyleGANGenerator, VGG16Features

#: Buffers the official files may carry that are always recomputed from the configuration.
IGNORED_GENERATOR_KEYS = ("truncation.truncation",)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a ``.pth`` state_dict safely; a clear error for missing or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch weight file ({first})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state_dict of tensors")
    return state


def _summarise(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" … (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Copy ``state`` into ``module``; every key and shape must match."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)}≠{list(expected[k].shape)}"
             for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summarise(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_summarise(wrong)}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: " + "; ".join(problems))
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise CheckpointError(f"{source} holds NaN/inf values ({_summarise(broken)}); it comes from a diverged "
                              f"or damaged run — use an earlier checkpoint")
    with torch.no_grad():
        for k, v in module.state_dict().items():
            v.copy_(state[k].to(v.dtype))
    return module


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
