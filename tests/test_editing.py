"""The editing library: interpolation, manipulation, boundary files, style mixing and semantic diffusion."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from idinvert.engine.diffusion import crop_box, diffuse, diffusion_mask, stitch
from idinvert.boundaries import Boundary, load_boundary, parse_layers, save_boundary
from idinvert.engine.editing import default_mix_layer_start, interpolate, manipulate, mix
from idinvert.engine.tuned import synthesize
from idinvert.errors import BoundaryError, ConfigError, NonFiniteError
from idinvert.engine.inversion import encode, optimize_codes
from idinvert.networks.derived import frozen

L, C = 8, 32  # codes of the tiny 32 px pack



def codes(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, L, C, generator=torch.Generator().manual_seed(seed))


# --- interpolation ----------------------------------------------------------------------------------

def test_interpolation_endpoints_equal_the_inputs_and_the_path_is_linear():
    src, dst = codes(2, 0), codes(3, 1)
    out = interpolate(src, dst, steps=5)
    assert out.shape == (2, 3, 7, L, C)
    for i in range(2):
        for j in range(3):
            assert torch.equal(out[i, j, 0], src[i]) and torch.equal(out[i, j, -1], dst[j])
            for k, w in enumerate(np.linspace(0, 1, 7)):
                assert torch.allclose(out[i, j, k], src[i] + float(w) * (dst[j] - src[i]), atol=1e-6)
    pairs = interpolate(src, dst[:2], steps=0, pairwise=True)
    assert pairs.shape == (2, 2, L, C) and torch.equal(pairs[:, 0], src) and torch.equal(pairs[:, 1], dst[:2])


def test_interpolation_rejects_codes_of_different_models():
    with pytest.raises(ValueError, match="different models"):
        interpolate(codes(1), torch.zeros(1, L + 1, C))


# --- manipulation -----------------------------------------------------------------------------------

def test_manipulate_moves_only_the_selected_layers_by_exactly_d_times_b():
    wp = codes(2)
    b = torch.randn(1, L, C)
    out = manipulate(wp, b, layers="2-4")
    d = torch.linspace(-3, 3, 7)
    assert out.shape == (2, 7, L, C)
    for k in range(7):
        assert torch.equal(out[:, k, :2], wp[:, :2]) and torch.equal(out[:, k, 5:], wp[:, 5:])
        assert torch.allclose(out[:, k, 2:5] - wp[:, 2:5], d[k] * b[0, 2:5], atol=1e-6)
    assert torch.equal(out[:, 3], wp)  # d = 0


def test_plain_boundary_is_broadcast_to_the_chosen_layers():
    wp, b = codes(1), torch.randn(1, C)
    out = manipulate(wp, b, distances=[2.0], layers=[0, 7])
    assert torch.allclose(out[0, 0, 0] - wp[0, 0], 2 * b[0], atol=1e-6)
    assert torch.allclose(out[0, 0, 7] - wp[0, 7], 2 * b[0], atol=1e-6)
    assert torch.equal(out[0, 0, 1:7], wp[0, 1:7])


@pytest.mark.parametrize("spec, expected", [("0-5", [0, 1, 2, 3, 4, 5]), ("2,3,4", [2, 3, 4]), ("", list(range(L))),
                                            ("0-1, 7", [0, 1, 7]), (None, list(range(L))), ([3, 1], [1, 3])])
def test_layer_specs(spec, expected):
    assert parse_layers(spec, L) == expected


@pytest.mark.parametrize("spec", ["a-b", "8", "0-9", "-1"])
def test_bad_layer_specs(spec):
    with pytest.raises(ConfigError, match="layers"):
        parse_layers(spec, L)


def test_official_dict_boundary(tmp_path):
    b = np.random.default_rng(0).normal(size=(1, L, C)).astype(np.float32)
    path = tmp_path / "age.npy"
    np.save(path, {"boundary": b, "meta_data": {"manipulate_layers": [0, 1, 2, 3, 4, 5]}})  # official format
    boundary = load_boundary(path, (L, C))
    assert boundary.layers == (0, 1, 2, 3, 4, 5)
    assert torch.equal(boundary.direction, torch.from_numpy(b[0]))
    out = manipulate(codes(1), boundary, distances=[1.0])  # the file's layers apply
    assert torch.allclose(out[0, 0, :6] - codes(1)[0, :6], boundary.direction[:6], atol=1e-6)
    assert torch.equal(out[0, 0, 6:], codes(1)[0, 6:])
    assert torch.equal(manipulate(codes(1), boundary, distances=[1.0], layers="")[0, 0, 6:],
                       codes(1)[0, 6:] + boundary.direction[6:])  # explicit layers win


@pytest.mark.parametrize("shape", [(1, C), (1, L, C)])
def test_plain_array_boundaries(tmp_path, shape):
    path = tmp_path / "b.npy"
    np.save(path, np.ones(shape, np.float32))
    boundary = load_boundary(path, (L, C))
    assert boundary.layers is None and boundary.direction.shape == (shape[0] if len(shape) == 2 else L, C)


@pytest.mark.parametrize("shape, code_shape", [((1, 512), (L, C)), ((1, 18, 512), (14, 512)), ((1, 14, 512), (L, C)),
                                               ((C,), (L, C)), ((2, C), (L, C))])
def test_boundary_of_the_wrong_shape_says_what_fits(tmp_path, shape, code_shape):
    path = tmp_path / "w.npy"
    np.save(path, np.ones(shape, np.float32))
    with pytest.raises(BoundaryError) as info:
        load_boundary(path, code_shape)
    message = str(info.value)
    assert "\n" not in message and str(list(shape)) in message
    assert f"[1, {code_shape[1]}]" in message and f"[1, {code_shape[0]}, {code_shape[1]}]" in message
    with pytest.raises(BoundaryError):
        manipulate(torch.zeros(1, *code_shape), torch.ones(shape))


def test_dict_boundary_of_the_wrong_shape(tmp_path):
    path = tmp_path / "ffhq_age.npy"
    np.save(path, {"boundary": np.ones((1, 14, 512), np.float32), "meta_data": {"manipulate_layers": [0, 1]}})
    with pytest.raises(BoundaryError, match=r"\[1, 14, 512\].*\[1, 8, 32\]"):
        load_boundary(path, (L, C))


def _npy_with_pickle(path, payload: bytes) -> None:
    """A .npy object array whose pickle is ``payload`` (what np.save writes for objects)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(payload)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def test_pickles_that_carry_code_are_refused_not_run(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.npy"
    _npy_with_pickle(path, pickle.dumps(np.array({"boundary": _Exploit(marker)}, dtype=object), protocol=3))
    with pytest.raises(BoundaryError, match="refusing .*builtins.exec"):
        load_boundary(path, (L, C))
    assert not marker.exists()
    np.save(tmp_path / "set.npy", {"boundary": np.ones((1, C), np.float32), "meta_data": {"layers": {1, 2}}})
    with pytest.raises(BoundaryError, match="refusing"):
        load_boundary(tmp_path / "set.npy", (L, C))


@pytest.mark.parametrize("content", ["nan", "strings", "garbage", "no_boundary_key"])
def test_unusable_boundary_files(tmp_path, content):
    path = tmp_path / "b.npy"
    if content == "nan":
        np.save(path, np.full((1, C), np.nan, np.float32))
    elif content == "strings":
        np.save(path, np.array([["a"] * C]))
    elif content == "garbage":
        path.write_bytes(b"\x93NUMPY garbage")
    else:
        np.save(path, {"direction": np.ones((1, C), np.float32)})
    with pytest.raises(BoundaryError, match="b.npy"):
        load_boundary(path, (L, C))


def test_save_boundary_writes_the_official_format(tmp_path):
    b = torch.randn(L, C)
    path = save_boundary(tmp_path / "smile.npy", b, layers=[2, 3], meta={"attribute": "smile", "accuracy": 0.9})
    raw = np.load(path, allow_pickle=True)[()]  # how the official scripts read it
    assert set(raw) == {"boundary", "meta_data"} and raw["boundary"].dtype == np.float32
    assert raw["boundary"].shape == (1, L, C) and raw["meta_data"]["manipulate_layers"] == [2, 3]
    loaded = load_boundary(path, (L, C))
    assert torch.equal(loaded.direction, b) and loaded.layers == (2, 3)
    assert loaded.meta == {"attribute": "smile", "accuracy": 0.9}
    assert isinstance(loaded, Boundary)


# --- style mixing -----------------------------------------------------------------------------------

def test_mix_takes_layers_from_k_on_from_the_style():
    style, content = codes(2, 0), codes(3, 1)
    out = mix(style, content, layer_start=5)
    assert out.shape == (2, 3, L, C)
    for s in range(2):
        for c in range(3):
            assert torch.equal(out[s, c, :5], content[c, :5]) and torch.equal(out[s, c, 5:], style[s, 5:])
    assert torch.equal(mix(style, content, layer_start=L)[1], content)
    with pytest.raises(ConfigError):
        mix(style, content, layer_start=L + 1)


def test_default_mix_layer_start_is_the_official_10_of_14_scaled():
    assert default_mix_layer_start(14) == 10  # official (256 px)
    assert [default_mix_layer_start(n) for n in (8, 10, 16, 18)] == [6, 8, 12, 12]
    assert torch.equal(mix(codes(1, 0), codes(1, 1))[0, 0, 6:], codes(1, 0)[0, 6:])


def test_synthesize_keeps_the_leading_axes(tiny_pack):
    wp = codes(6).view(2, 3, L, C)
    images = synthesize(tiny_pack.generator, wp, batch_size=4)
    assert images.shape == (2, 3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(images[1, 2], tiny_pack.generator.synthesize(wp[1, 2:3])[0], atol=1e-5)


# --- semantic diffusion -----------------------------------------------------------------------------

def test_mask_geometry_at_256_is_the_official_one():
    box = crop_box(256)
    assert (box.top, box.left, box.size) == (90, 70, 110)
    mask = diffusion_mask(256, box)[0, 0]
    rows, cols = torch.nonzero(mask.sum(1)).flatten(), torch.nonzero(mask.sum(0)).flatten()
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (90, 199, 70, 179)
    assert mask.sum() == 110 * 110


def test_mask_scales_with_the_resolution():
    big = diffusion_mask(512, crop_box(512))
    assert torch.equal(big, torch.nn.functional.interpolate(diffusion_mask(256, crop_box(256)), scale_factor=2))
    small = crop_box(32)  # 110·32/256 = 13.75 → 14, centre (16, 18)
    assert (small.size, small.left, small.top) == (14, 9, 11)
    custom = crop_box(256, crop_size=60, center_x=128, center_y=100)
    assert (custom.top, custom.left, custom.size) == (70, 98, 60)
    with pytest.raises(ConfigError, match="does not fit"):
        crop_box(32, crop_size=30)


def test_stitch_pastes_the_target_patch_into_every_context():
    mask = diffusion_mask(32, crop_box(32))
    targets, contexts = torch.rand(2, 3, 32, 32), -torch.rand(3, 3, 32, 32)
    x = stitch(targets, contexts, mask)
    assert x.shape == (2, 3, 3, 32, 32)
    inside = mask[0].bool().expand(3, 32, 32)
    assert torch.equal(x[1, 2][inside], targets[1][inside]) and torch.equal(x[1, 2][~inside], contexts[2][~inside])


def test_diffusion_loss_does_not_see_the_context_region(tiny_pack):
    g = tiny_pack.generator
    mask = diffusion_mask(32, crop_box(32))
    target, other = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    a, b = stitch(target, other, mask)[0]  # same patch, different surroundings
    init = codes(1)
    with frozen(g, tiny_pack.perceptual):
        runs = [optimize_codes(g, tiny_pack.perceptual, x[None], init, steps=3, lambda_vgg=0.166, mask=mask)
                for x in (a, b)]
        moved = optimize_codes(g, tiny_pack.perceptual, (-a)[None], init, steps=1, lambda_vgg=0.166, mask=mask)
    assert torch.equal(runs[0].losses["total"], runs[1].losses["total"])
    assert torch.equal(runs[0].codes, runs[1].codes)
    assert "dom" not in runs[0].losses
    assert moved.losses["total"][0] != runs[0].losses["total"][0]  # the patch does count


def test_diffuse_returns_images_codes_and_stitched_inputs(tiny_pack):
    targets, contexts = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    result = diffuse(targets, contexts, tiny_pack, steps=2, batch_size=2)
    assert result.images.shape == (1, 2, 3, 32, 32) and result.codes.shape == (1, 2, L, C)
    assert result.stitched.shape == (1, 2, 3, 32, 32) and result.encoder_codes.shape == (1, 2, L, C)
    assert torch.equal(result.stitched, stitch(targets, contexts, result.mask))
    assert torch.allclose(result.encoder_codes[0], encode(tiny_pack.encoder, result.stitched[0]), atol=1e-5)
    assert set(result.losses) == {"total", "pix", "vgg"} and result.losses["total"].shape == (2, 1, 2)
    assert torch.allclose(result.images[0], synthesize(tiny_pack.generator, result.codes[0]), atol=1e-5)
    assert not torch.equal(result.codes, result.encoder_codes)  # it optimised


def test_diffuse_reports_nan_as_nonfinite(tiny_pack):
    targets = torch.zeros(1, 3, 32, 32)
    targets[:, :, 15, 15] = float("nan")  # inside the patch
    with pytest.raises(NonFiniteError, match="NaN"):
        diffuse(targets, torch.zeros(1, 3, 32, 32), tiny_pack, steps=1)


# --- local steps ----------------------------------------------------------------------------------

def _dcgan():
    from idinvert.pack import load_pack
    return load_pack("dcgan-faces64")


def test_a_local_step_keeps_the_region_outside_the_ellipse_and_moves_as_far_along_the_boundary():
    from idinvert.engine.editing import local_steps, outside_ellipse
    from idinvert.engine.tuned import TunedWeights

    pack = _dcgan()
    z = torch.randn(2, 1, 100, generator=torch.Generator().manual_seed(3))
    n = torch.randn(1, 100, generator=torch.Generator().manual_seed(4))
    n = n / n.norm()
    keep = outside_ellipse(64, (0.5, 0.75), (0.3, 0.15))
    assert keep.shape == (64, 64) and keep[48, 32] == 0 and keep[5, 5] == 1 and 0.8 < keep.mean() < 0.95
    v = local_steps(pack.generator, z, n, keep, stiffness=0.01)
    assert v.shape == (2, 1, 100)
    # as far along the boundary's normal as the boundary's own step
    assert torch.allclose((v.flatten(1) * n.flatten()).sum(1), torch.ones(2), atol=1e-4)

    def outside_change(step, d=0.2):
        moved = synthesize(pack.generator, z + d * step) - synthesize(pack.generator, z)
        return ((moved.abs().mean(1) * keep).sum((1, 2)) / keep.sum())

    def inside_change(step, d=0.2):
        moved = synthesize(pack.generator, z + d * step) - synthesize(pack.generator, z)
        return ((moved.abs().mean(1) * (1 - keep)).sum((1, 2)) / (1 - keep).sum())

    plain, local = outside_change(n.expand(2, 1, 100)), outside_change(v)
    assert (local < 0.5 * plain).all(), (local, plain)  # the rest of the face moves far less
    assert (inside_change(v) > 0.5 * local).all()  # while the region itself still changes
    # a stiff step nears the boundary's step; zero tuning deltas are the untuned generator
    cosine = lambda steps: torch.nn.functional.cosine_similarity(steps.flatten(1), n.flatten()[None])  # noqa: E731
    stiff = local_steps(pack.generator, z, n, keep, stiffness=10.0)
    assert (cosine(stiff) > 0.95).all() and (cosine(stiff) > cosine(v) + 0.1).all()
    zeros = TunedWeights.zeros(pack.generator, 2)
    assert torch.allclose(local_steps(pack.generator, z, n, keep, tuned=zeros, stiffness=0.01), v, atol=1e-4)


def test_local_steps_refuse_wide_codes_and_bad_stiffness():
    from idinvert.engine.editing import local_steps, outside_ellipse

    pack = _dcgan()
    keep = outside_ellipse(64, (0.5, 0.75), (0.3, 0.15))
    with pytest.raises(ConfigError, match="at most 1024"):
        local_steps(pack.generator, torch.zeros(1, 14, 512), torch.zeros(14, 512), keep)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="stiffness"):
            local_steps(pack.generator, torch.zeros(1, 1, 100), torch.ones(1, 100), keep, stiffness=bad)
