"""StyleGAN2: the networks, both file formats against the references of the original code, safety of
the NVIDIA reader, the rosinality export and the conversion to a pack."""

from __future__ import annotations

import argparse
import builtins
import collections
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from idinvert.errors import CheckpointError, ConfigError
from idinvert.formats.nvidia import load_nvidia_snapshot
from idinvert.formats.rosinality import (load_rosinality_checkpoint, read_checkpoint, rosinality_state_dicts,
                                        save_rosinality)
from idinvert.formats.stylegan2 import load_stylegan2, stylegan2_file_format
from idinvert.networks.stylegan2 import StyleGAN2Config, StyleGAN2Generator
from idinvert.networks.stylegan2_discriminator import StyleGAN2Discriminator
from idinvert.networks.stylegan2_layers import fir_filter, modulated_conv2d

from conftest import shared_data

TOL = 1e-4  # max abs error allowed against the original implementations' float32 outputs
FIXTURES = ("stylegan2-fixtures",)


def tiny_config(**kw) -> StyleGAN2Config:
    return StyleGAN2Config(**{"resolution": 16, "z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 128,
                              "channel_max": 16, **kw})


def tiny_networks(seed: int = 0, **kw) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    torch.manual_seed(seed)
    g, d = StyleGAN2Generator(tiny_config(**kw)).eval(), StyleGAN2Discriminator(tiny_config(**kw)).eval()
    with torch.no_grad():  # non-zero noise strengths, biases and w_avg, so that every input matters
        for p in list(g.parameters()) + list(d.parameters()):
            p.add_(0.1 * torch.randn_like(p))
        g.mapping.w_avg.normal_()
    return g, d


def references(name: str) -> dict[str, torch.Tensor]:
    ref = np.load(shared_data(*FIXTURES, f"{name}-ref.npz"))
    return {k: torch.from_numpy(ref[k]) for k in ref.files}


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


# --- configuration and networks -------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [("resolution", 48), ("resolution", 2), ("resolution", 2048),
                                         ("w_dim", 0), ("z_dim", 5000), ("channel_max", 0),
                                         ("mapping_layers", 17), ("mapping_lr_mul", 0.0), ("mbstd_group_size", 0),
                                         ("truncation_psi", 3.0), ("truncation_layers", 7), ("conv_clamp", -1.0)])
def test_config_bounds(field, value):
    with pytest.raises(ConfigError, match=field):
        tiny_config(**{field: value})


def test_generator_interface():
    g, d = tiny_networks()
    assert g.kind == "stylegan2" and g.code_shape == (6, 16) and g.layerwise  # num_ws = 2·log2(16) − 2
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        codes = g.sample_codes(z)
        assert codes.shape == (2, 6, 16) and torch.equal(codes[:, 0], codes[:, 5])
        cut = g.sample_codes(z, truncation_psi=0.5, truncation_layers=2)
        assert torch.equal(cut[:, 2:], codes[:, 2:]) and not torch.allclose(cut[:, :2], codes[:, :2])
        assert torch.allclose(g.sample_codes(z, truncation_psi=0.0), g.mean_code().expand(2, 6, 16))
        img = g.synthesize(codes)
        assert img.shape == (2, 3, 16, 16) and torch.equal(img, g.synthesize(codes))  # const noise: deterministic
        assert not torch.equal(img, g.synthesize(codes, noise_mode="random"))
        assert not torch.equal(img, g.synthesize(codes, noise_mode="none"))
        assert torch.equal(img, g(z))
        assert d(img).shape == (2, 1)
    assert g.mean_code().shape == (6, 16)
    with pytest.raises(ValueError):
        g.synthesize(codes[:, :5])
    with pytest.raises(ValueError):
        g.synthesize(codes, noise_mode="other")


def test_conv_clamp_bounds_activations():
    g, _ = tiny_networks(conv_clamp=0.05)
    with torch.no_grad():
        img = g.synthesize(g.sample_codes(torch.randn(2, 16)))
    # toRGB outputs are clamped to ±0.05 at each of the 3 resolutions, then upsampled and summed.
    assert img.abs().max() <= 3 * 0.05 + 1e-5



@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_both_modulated_convolution_paths_agree(batch, demodulate, up):
    """Per-sample weights with a grouped convolution (fused) and scaled activations around the shared
    weight: the same outputs and the same gradients for the input, the styles and the weight."""
    gen = torch.Generator().manual_seed(batch)
    x, weight = torch.randn(batch, 5, 6, 6, generator=gen), torch.randn(7, 5, 3, 3, generator=gen)
    styles = torch.rand(batch, 5, generator=gen) + 0.5
    results = []
    for fused in (True, False):
        inputs = [t.clone().requires_grad_(True) for t in (x, weight, styles)]
        y = modulated_conv2d(inputs[0], inputs[1], inputs[2], demodulate=demodulate, up=up, f=fir_filter(),
                             fused=fused)
        y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape))
        results.append([y.detach()] + [t.grad for t in inputs])
    assert results[0][0].shape == (batch, 7, 12 if up else 6, 12 if up else 6)
    for a, b in zip(*results):
        assert max_err(a, b) < 1e-5 * max(1.0, float(a.abs().max()))


@pytest.mark.parametrize("resolution", [4, 16])  # 4 px: no upsampling layer; 16 px: two
@pytest.mark.parametrize("batch", [1, 3])
def test_both_synthesis_paths_give_the_same_images_and_code_gradients(resolution, batch):
    torch.manual_seed(0)
    g = StyleGAN2Generator(tiny_config(resolution=resolution))
    with torch.no_grad():  # non-zero noise strengths and biases
        for p in g.parameters():
            p.add_(0.1 * torch.randn_like(p))
    codes = g.sample_codes(torch.randn(batch, 16, generator=torch.Generator().manual_seed(2))).detach()
    results = []
    for fused in (True, False):
        c = codes.clone().requires_grad_(True)
        img = g.synthesize(c, fused_modconv=fused)
        img.square().mean().backward()
        results.append((img.detach(), c.grad))
        with torch.no_grad():  # the automatic choice is one of the two
            assert max_err(g.synthesize(codes), img) < 1e-5
    (img_a, grad_a), (img_b, grad_b) = results
    assert max_err(img_a, img_b) < 1e-5
    assert max_err(grad_a, grad_b) < 1e-6 + 1e-4 * float(grad_a.abs().max())

# --- references of the original implementations ---------------------------------------------------------
@pytest.fixture(scope="module", params=["sg2ada-tiny32", "sg2ada-tiny64", "sg2ada-tiny32clamp"])
def nvidia_fixture(request):
    path = shared_data(*FIXTURES, f"{request.param}.pkl")
    g, d, info = load_nvidia_snapshot(path)
    return request.param, g, d, info, references(request.param)


def test_nvidia_snapshot_matches_references(nvidia_fixture):
    name, g, d, info, ref = nvidia_fixture
    assert info["format"] == "nvidia-stylegan2-ada" and info["embedded_source_chars"] > 0
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules  # nothing of it was imported
    assert g.code_shape == tuple(ref["ws"].shape[1:])
    with torch.no_grad():
        errors = {"ws": max_err(g.sample_codes(ref["z"]), ref["ws"]),
                  "ws_psi07": max_err(g.sample_codes(ref["z"], truncation_psi=0.7), ref["ws_psi07"]),
                  "img": max_err(g.synthesize(ref["ws"]), ref["img"]),
                  "img_psi07": max_err(g.synthesize(ref["ws_psi07"]), ref["img_psi07"]),
                  "img_noise_none": max_err(g.synthesize(ref["ws"], noise_mode="none"), ref["img_noise_none"]),
                  "d_logits": max_err(d(ref["img"]), ref["d_logits"])}
    assert all(e <= TOL for e in errors.values()), (name, errors)


def test_nvidia_snapshot_configuration(nvidia_fixture):
    name, g, d, _, _ = nvidia_fixture
    expected = {"sg2ada-tiny32": (32, 2, 1024, 64), "sg2ada-tiny64": (64, 4, 512, 32),
                "sg2ada-tiny32clamp": (32, 2, 1024, 64)}[name]
    clamp = 256.0 if name.endswith("clamp") else None  # train.py's conv_clamp; D's skip layers carry none
    c = g.config
    assert (c.resolution, c.mapping_layers, c.channel_base, c.channel_max) == expected
    assert (c.z_dim, c.w_dim, c.mapping_lr_mul, c.conv_clamp) == (64, 64, 0.01, clamp)
    assert d.config.mbstd_group_size == 4 and d.config.mbstd_channels == 1 and d.config.conv_clamp == clamp
    assert d.b16.conv1.conv_clamp == clamp and d.b16.skip.conv_clamp is None
    counts = {"sg2ada-tiny32": (263987, 288993), "sg2ada-tiny64": (95344, 74409),
              "sg2ada-tiny32clamp": (263987, 288993)}[name]
    assert (sum(p.numel() for p in g.parameters()), sum(p.numel() for p in d.parameters())) == counts


def test_nvidia_fp16_blocks_are_computed_in_float32(nvidia_fixture):
    """num_fp16_res = 2: NVIDIA's default path runs those blocks in float16; ours is its force_fp32 result,
    which differs from the float16 one by float16 rounding only."""
    name, g, d, info, ref = nvidia_fixture
    if name != "sg2ada-tiny32clamp":
        assert info["fp16_blocks"] == []
        return
    assert info["fp16_blocks"] == ["synthesis.b16", "synthesis.b32", "D.b32", "D.b16"]
    with torch.no_grad():
        logits = d(ref["img"])
    assert max_err(logits, ref["d_logits"]) <= TOL < max_err(logits, ref["d_logits_fp16blocks"]) < 1e-2


def test_the_clamp_follows_the_activation_gain():
    """NVIDIA's bias_act: x + b, activation, × gain, then clamp(−c, c); the discriminator's layers clamp
    at c·gain, its 1×1 skips not at all."""
    from idinvert.networks.stylegan2_layers import LRELU_GAIN, bias_act

    x, b = torch.linspace(-3, 3, 13).reshape(1, 13, 1, 1), torch.full((13,), 0.5)
    expected = (torch.nn.functional.leaky_relu(x + b.reshape(1, -1, 1, 1), 0.2) * (LRELU_GAIN * 0.7)).clamp(-1.0, 1.0)
    assert torch.equal(bias_act(x, b, activate=True, gain=0.7, clamp=1.0), expected)
    _, d = tiny_networks(conv_clamp=0.01)
    img = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 10
    f = d.resample_filter
    with torch.no_grad():
        assert d.b16.conv1(d.b16.conv0(d.b16.fromrgb(img, f), f), f, gain=0.5).abs().max() <= 0.005 + 1e-7
        assert d.b16.skip(d.b16.fromrgb(img, f), f, gain=0.5).abs().max() > 0.005  # the skip is not clamped


@pytest.fixture(scope="module")
def rosinality_fixture():
    path = shared_data(*FIXTURES, "rosinality-tiny32.pt")
    g, d, info = load_rosinality_checkpoint(path)
    return path, g, d, info, references("rosinality-tiny32")


def test_rosinality_matches_references(rosinality_fixture):
    _, g, d, info, ref = rosinality_fixture
    assert info["w_avg"] == "latent_avg" and g.code_shape == (8, 64)
    with torch.no_grad():
        trunc = g.sample_codes(ref["z"], truncation_psi=0.7)
        errors = {"w": max_err(g.mapping(ref["z"]), ref["w"]),
                  "img_z": max_err(g(ref["z"]), ref["img_z"]),
                  "img_w": max_err(g.synthesize(ref["w"][:, None].repeat(1, 8, 1)), ref["img_w"]),
                  "img_wplus": max_err(g.synthesize(ref["wplus"]), ref["img_wplus"]),
                  "wplus_trunc07": max_err(trunc, ref["wplus_trunc07"]),
                  "img_trunc07": max_err(g.synthesize(trunc), ref["img_trunc07"]),
                  "d_logits": max_err(d(ref["img_z"]), ref["d_logits"])}
    assert all(e <= TOL for e in errors.values()), errors
    assert torch.equal(g.mean_code()[0], ref["latent_avg"][0])
    assert sum(p.numel() for p in g.parameters()) == 314387 and sum(p.numel() for p in d.parameters()) == 337281


def test_format_dispatch():
    assert stylegan2_file_format(shared_data(*FIXTURES, "rosinality-tiny32.pt")) == "rosinality"
    assert stylegan2_file_format(shared_data(*FIXTURES, "sg2ada-tiny64.pkl")) == "nvidia"
    g, d, info = load_stylegan2(shared_data(*FIXTURES, "sg2ada-tiny64.pkl"), with_discriminator=False)
    assert d is None and g.resolution == 64 and info["format"] == "nvidia-stylegan2-ada"


def test_not_a_stylegan2_file(tmp_path):
    (tmp_path / "a.pkl").write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="neither"):
        load_stylegan2(tmp_path / "a.pkl")
    with pytest.raises(CheckpointError, match="no such file"):
        load_stylegan2(tmp_path / "missing.pkl")


def test_rosinality_convert_weight_layout(rosinality_fixture, tmp_path):
    """convert_weight.py writes {'g_ema', 'latent_avg' [w_dim]} (with --gen/--disc also 'g' and 'd')."""
    path, g, _, _, ref = rosinality_fixture
    original = read_checkpoint(path)
    for extra in ({}, {"g": original["g"], "d": original["d"]}):
        torch.save({"g_ema": original["g_ema"], "latent_avg": ref["latent_avg"][0].clone(), **extra}, tmp_path / "c.pt")
        g2, d2, info = load_stylegan2(tmp_path / "c.pt")
        assert info["w_avg"] == "latent_avg" and (d2 is None) == (not extra)
        with torch.no_grad():
            assert torch.equal(g2(ref["z"]), g(ref["z"]))
            assert max_err(g2.synthesize(ref["wplus"]), ref["img_wplus"]) <= TOL


def test_a_rosinality_discriminator_that_cannot_be_read_never_blocks_the_generator(rosinality_fixture, tmp_path):
    from idinvert.cli import main

    path, g, _, _, ref = rosinality_fixture
    original = read_checkpoint(path)
    d = {k: v for k, v in original["d"].items() if k != "final_linear.1.bias"}
    torch.save({"g_ema": original["g_ema"], "d": d, "latent_avg": original["latent_avg"]}, tmp_path / "c.pt")
    g2, d2, info = load_stylegan2(tmp_path / "c.pt")
    assert d2 is None and "final_linear.1.bias" in info["discriminator_skipped"]
    with torch.no_grad():
        assert torch.equal(g2(ref["z"]), g(ref["z"]))
    assert main(["convert", "--stylegan2", str(tmp_path / "c.pt"), "--out", str(tmp_path / "pack"), "--quiet"]) == 0
    assert (tmp_path / "pack" / "config.json").is_file()


@pytest.mark.parametrize("damage,message", [
    ("missing", "missing key to_rgb1.conv.weight"),
    ("zero_d", "style.1.weight has shape"),
    ("not_a_tensor", "holds a str, not a tensor"),
    ("nan_latent_avg", "latent_avg holds NaN"),
    ("arch_list", "an args.arch that is a list"),
    ("sparse", "sparse_coo tensor"),
    ("float8", "float8_e4m3fn tensor"),
])
def test_damaged_rosinality_files_get_one_line(rosinality_fixture, tmp_path, damage, message):
    path, g, _, _, _ = rosinality_fixture
    state = dict(read_checkpoint(path)["g_ema"])
    ckpt = {"g_ema": state, "latent_avg": torch.zeros(64)}
    if damage == "missing":
        del state["to_rgb1.conv.weight"]
    elif damage == "zero_d":
        state["style.1.weight"] = torch.tensor(1.0)
    elif damage == "not_a_tensor":
        state["input.input"] = "weights"
    elif damage == "nan_latent_avg":
        ckpt["latent_avg"] = torch.full((64,), float("nan"))
    elif damage == "arch_list":
        ckpt["args"] = argparse.Namespace(arch=[[1, 2]] * 3)
    elif damage == "sparse":
        state["style.1.bias"] = state["style.1.bias"].to_sparse()
    elif damage == "float8":
        state["style.1.bias"] = state["style.1.bias"].to(torch.float8_e4m3fn)
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=message) as exc:
        load_stylegan2(tmp_path / "bad.pt")
    assert "\n" not in str(exc.value)


# --- export to rosinality ---------------------------------------------------------------------------------
def test_rosinality_export_reproduces_the_original_file(rosinality_fixture, tmp_path):
    path, g, d, _, _ = rosinality_fixture
    original = read_checkpoint(path)
    exported = rosinality_state_dicts(g, d)
    for part in ("g_ema", "d"):
        assert exported[part].keys() == original[part].keys()
        assert all(torch.equal(exported[part][k], original[part][k]) for k in original[part]), part


def test_rosinality_round_trip(nvidia_fixture, tmp_path):
    name, g, d, _, ref = nvidia_fixture
    if g.config.conv_clamp is not None:  # rosinality's layers never clamp: the file would differ
        with pytest.raises(ConfigError, match="conv_clamp"):
            save_rosinality(g, tmp_path / "export.pt", discriminator=d)
        return
    path = save_rosinality(g, tmp_path / "export.pt", discriminator=d)
    g2, d2, info = load_stylegan2(path)
    assert info["w_avg"] == "latent_avg" and g2.config == g.config
    with torch.no_grad():
        assert torch.equal(g2.synthesize(ref["ws"]), g.synthesize(ref["ws"]))
        assert torch.equal(g2.sample_codes(ref["z"], truncation_psi=0.7), g.sample_codes(ref["z"], truncation_psi=0.7))
        assert torch.equal(d2(ref["img"]), d(ref["img"]))


def test_rosinality_without_latent_avg_estimates_it(rosinality_fixture, tmp_path):
    _, g, _, _, ref = rosinality_fixture
    torch.save({"g_ema": rosinality_state_dicts(g)["g_ema"]}, tmp_path / "bare.pt")
    g2, d2, info = load_stylegan2(tmp_path / "bare.pt")
    assert d2 is None and info["w_avg"].startswith("estimated")
    assert (g2.mapping.w_avg - ref["latent_avg"][0]).abs().max() < 0.2  # 4096 samples, as rosinality's
    with torch.no_grad():
        assert torch.equal(g2(ref["z"]), g(ref["z"]))


def test_rosinality_refusals(rosinality_fixture, tmp_path):
    path, g, _, _, _ = rosinality_fixture
    state = rosinality_state_dicts(g)["g_ema"]
    torch.save({"g_ema": state, "args": argparse.Namespace(arch="swagan")}, tmp_path / "swagan.pt")
    with pytest.raises(CheckpointError, match="swagan"):
        load_stylegan2(tmp_path / "swagan.pt")
    blurred = dict(state, **{"convs.0.conv.blur.kernel": torch.ones(4, 4) / 4})
    torch.save({"g_ema": blurred}, tmp_path / "blur.pt")
    with pytest.raises(CheckpointError, match="blur kernel"):
        load_stylegan2(tmp_path / "blur.pt")
    extra = dict(state, **{"convs.99.conv.weight": torch.zeros(1)})
    torch.save({"g_ema": extra}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_stylegan2(tmp_path / "extra.pt")


# --- safety of the NVIDIA reader ---------------------------------------------------------------------------
class _Record:
    """Pickles like a ``torch_utils.persistence`` object: ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, meta: dict) -> None:
        self.meta = meta

    def __reduce__(self):
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,))


class _Exec:
    """A payload whose ``__reduce__`` runs Python code (``builtins.exec``) when unpickled."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (builtins.exec, (self.code,))


def _record(module: torch.nn.Module, class_name: str, source: str, **attrs) -> _Record:
    state = {"training": False, "_parameters": collections.OrderedDict(module._parameters),
             "_buffers": collections.OrderedDict((k, v) for k, v in module._buffers.items()
                                                 if k not in module._non_persistent_buffers_set),
             "_non_persistent_buffers_set": set(),
             "_modules": collections.OrderedDict((k, _record(m, type(m).__name__, source))
                                                 for k, m in module._modules.items()),
             **({"conv_clamp": module.conv_clamp} if hasattr(module, "conv_clamp") else {}), **attrs}
    return _Record({"type": "class", "version": 6, "module_src": source, "class_name": class_name, "state": state})


@pytest.fixture
def fake_persistence(monkeypatch):
    """A ``torch_utils.persistence`` module that, like NVIDIA's, executes each record's embedded source."""
    package, module = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        exec(compile(meta["module_src"], "<embedded>", "exec"), {})
        return meta

    _reconstruct_persistent_obj.__module__ = module.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package.persistence = module
    monkeypatch.setitem(sys.modules, "torch_utils", package)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)
    return module


def _snapshot(g: StyleGAN2Generator, source: str, **extra) -> bytes:
    return pickle.dumps({"training_set_kwargs": None, "G": None, "D": None, "augment_pipe": None,
                         "G_ema": _record(g, "Generator", source, c_dim=0, img_channels=3), **extra}, protocol=4)


def test_embedded_source_is_never_executed(tmp_path, fake_persistence, monkeypatch):
    g, _ = tiny_networks()
    marker = tmp_path / "pwned.txt"
    data = _snapshot(g, f"open({str(marker)!r}, 'w').write('the embedded source ran')\n")
    (tmp_path / "snapshot.pkl").write_bytes(data)
    pickle.loads(data)  # the original loader's behaviour: the source runs …
    assert marker.exists()
    marker.unlink()
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")
    monkeypatch.delitem(sys.modules, "torch_utils")
    loaded, d, info = load_stylegan2(tmp_path / "snapshot.pkl")  # … this one only reads the tensors
    assert not marker.exists() and d is None and info["embedded_source_chars"] > 0
    with torch.no_grad():
        codes = g.sample_codes(torch.randn(2, 16))
        assert torch.equal(loaded.synthesize(codes), g.synthesize(codes))


def test_globals_outside_the_allow_list_are_refused(tmp_path, fake_persistence):
    g, _ = tiny_networks()
    marker = tmp_path / "pwned.txt"
    (tmp_path / "reduce.pkl").write_bytes(
        _snapshot(g, "", training_set_kwargs=_Exec(f"open({str(marker)!r}, 'w').write('__reduce__ ran')")))
    with pytest.raises(CheckpointError, match=r"refused to load: it references builtins\.exec") as exc:
        load_stylegan2(tmp_path / "reduce.pkl")
    assert "\n" not in str(exc.value) and not marker.exists()
    (tmp_path / "tf.pkl").write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00.")
    with pytest.raises(CheckpointError, match="TensorFlow"):
        load_stylegan2(tmp_path / "tf.pkl")


@pytest.mark.parametrize("change,message", [
    ({"c_dim": 10}, "conditional"),
    ({"img_channels": 1}, "1 image channels"),
    ({"architecture": "resnet"}, "'resnet' generator architecture"),
])
def test_unsupported_snapshots_are_refused(tmp_path, fake_persistence, change, message):
    g, _ = tiny_networks()
    attrs = {"c_dim": 0, "img_channels": 3, **change}
    data = pickle.dumps({"G_ema": _record(g, "Generator", "", **attrs)}, protocol=4)
    (tmp_path / "s.pkl").write_bytes(data)
    with pytest.raises(CheckpointError, match=message) as exc:
        load_stylegan2(tmp_path / "s.pkl")
    assert "\n" not in str(exc.value)


def test_stylegan3_is_refused(tmp_path, fake_persistence):
    g, _ = tiny_networks()
    g.synthesis.add_module("input", torch.nn.Linear(1, 1))  # StyleGAN3's SynthesisInput
    (tmp_path / "s3.pkl").write_bytes(_snapshot(g, ""))
    with pytest.raises(CheckpointError, match="StyleGAN3"):
        load_stylegan2(tmp_path / "s3.pkl")


def _set_attr(record: _Record, dotted: str, **attrs) -> None:
    for name in dotted.split("."):
        record = record.meta["state"]["_modules"][name]
    record.meta["state"].update(attrs)


def test_every_train_py_configuration_is_read(tmp_path, fake_persistence):
    """conv_clamp on every layer but D's skips, an augment_pipe, G and D beside G_ema; a D whose
    layers do not follow NVIDIA's pattern is left out with a note and the generator still converts."""
    from idinvert.cli import main

    g, d = tiny_networks(conv_clamp=256.0)
    augment = _Record({"type": "class", "version": 6, "module_src": "", "class_name": "AugmentPipe",
                       "state": {"training": False, "_parameters": {}, "_modules": {}, "xflip": 1.0,
                                 "_buffers": {"p": torch.zeros([]), "Hz_geom": torch.randn(12)}}})
    d_record = _record(d, "Discriminator", "", c_dim=0)
    snapshot = {"training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset", "xflip": False},
                "G": _record(g, "Generator", "", c_dim=0, img_channels=3), "D": d_record, "augment_pipe": augment,
                "G_ema": _record(g, "Generator", "", c_dim=0, img_channels=3)}
    (tmp_path / "s.pkl").write_bytes(pickle.dumps(snapshot, protocol=4))
    g2, d2, info = load_stylegan2(tmp_path / "s.pkl")
    assert g2.config.conv_clamp == 256.0 and d2.config.conv_clamp == 256.0 and "discriminator_skipped" not in info
    img = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(d2(img), d(img)) and torch.equal(g2(torch.ones(1, 16)), g(torch.ones(1, 16)))
    _set_attr(d_record, "b16.skip", conv_clamp=256.0)  # not a pattern NVIDIA's code builds
    (tmp_path / "odd_d.pkl").write_bytes(pickle.dumps(snapshot, protocol=4))
    g3, d3, info = load_stylegan2(tmp_path / "odd_d.pkl")
    assert d3 is None and "skip layers" in info["discriminator_skipped"] and g3.config.conv_clamp == 256.0
    assert main(["convert", "--stylegan2", str(tmp_path / "odd_d.pkl"), "--out", str(tmp_path / "pack")]) == 0
    assert (tmp_path / "pack" / "config.json").is_file()


# --- conversion to a pack -----------------------------------------------------------------------------------
def test_convert_to_pack(tmp_path):
    from idinvert.cli import main
    from idinvert.pack import load_pack

    path = shared_data(*FIXTURES, "sg2ada-tiny32.pkl")
    assert main(["convert", "--stylegan2", str(path), "--out", str(tmp_path / "pack"), "--quiet"]) == 0
    pack = load_pack(tmp_path / "pack")
    g, _, _ = load_stylegan2(path, with_discriminator=False)
    assert pack.generator.kind == "stylegan2" and pack.config["generator_kind"] == "stylegan2"
    ref = references("sg2ada-tiny32")
    with torch.no_grad():
        assert torch.equal(pack.generator.synthesize(ref["ws"]), g.synthesize(ref["ws"]))
        assert torch.equal(pack.generator.mean_code(), g.mean_code())
    assert main(["convert", "--stylegan2", str(tmp_path / "missing.pkl"), "--out", str(tmp_path / "p2")]) == 2
