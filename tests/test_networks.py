"""Architecture facts from idinvert-spec.md §1–§4, checked on our modules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from idinvert.networks.config import ConfigError, DiscriminatorConfig, EncoderConfig, GeneratorConfig, official_256
from idinvert.networks import Discriminator, DomainGuidedEncoder, StyleGANGenerator, VGG16Features
from idinvert.networks.layers import conv_downsample, upsample_conv
from official_layout import GENERATOR_BUFFERS, encoder_shapes, generator_shapes, vgg_shapes

from conftest import tiny_generator_config


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_official_parameter_counts():
    g_cfg, e_cfg, _ = official_256()
    g = StyleGANGenerator(g_cfg)
    assert n_params(g) == 29_500_758
    assert n_params(g.mapping) == 5_515_776
    assert n_params(g.synthesis) == 23_984_982
    e = DomainGuidedEncoder(e_cfg)
    assert n_params(e) == 165_326_848
    assert n_params(e.block7.fc) == 117_440_512
    assert sum(v.numel() for v in e.state_dict().values()) == 165_359_122
    assert n_params(VGG16Features()) == 14_714_688


def test_spec_layouts_count_the_stated_parameters():
    # The layouts in official_layout.py are written from the spec; they must add up to its totals.
    g = generator_shapes()
    assert sum(math.prod(s) for k, s in g.items() if not any(b in k for b in GENERATOR_BUFFERS)) == 29_500_758
    e = encoder_shapes()
    assert sum(math.prod(s) for k, s in e.items() if "running" not in k and "num_batches" not in k) == 165_326_848
    assert sum(math.prod(s) for s in vgg_shapes().values()) == 14_714_688


def test_official_key_names_and_shapes():
    g_cfg, e_cfg, _ = official_256()
    ours = {k: tuple(v.shape) for k, v in StyleGANGenerator(g_cfg).state_dict().items()}
    assert ours == generator_shapes()
    ours = {k: tuple(v.shape) for k, v in DomainGuidedEncoder(e_cfg).state_dict().items()}
    assert ours == encoder_shapes()
    ours = {k: tuple(v.shape) for k, v in VGG16Features().state_dict().items()}
    assert ours == vgg_shapes()


@pytest.mark.parametrize("cin,cout", [(8, 4), (3, 5)])
def test_fused_upconv_equals_nearest_upsample_and_flipped_conv(cin, cout):
    torch.manual_seed(0)
    x = torch.randn(2, cin, 6, 6)
    w_tf = torch.randn(3, 3, cin, cout)  # official fused layout [3, 3, in, out]
    fused = upsample_conv(x, w_tf)
    flipped = w_tf.flip(0, 1).permute(3, 2, 0, 1)  # W[::-1, ::-1] as [out, in, 3, 3]
    reference = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), flipped, padding=1)
    assert fused.shape == reference.shape == (2, cout, 12, 12)
    assert (fused - reference).abs().max() < 1e-5


def test_nonfused_layer_computes_nearest_upsample_then_conv():
    cfg = tiny_generator_config()
    g = StyleGANGenerator(cfg)
    layer = g.synthesis.layer2  # 8×8, non-fused: conv.weight [out, in, 3, 3]
    assert not layer.fused
    x = torch.randn(1, layer.conv.weight.shape[1], 4, 4)
    ours = upsample_conv(x, layer.kernel_hwio())
    ref = F.conv2d(F.interpolate(x, scale_factor=2), layer.conv.weight * layer.scale, padding=1)
    assert (ours - ref).abs().max() < 1e-5


def test_fused_only_from_128():
    g = StyleGANGenerator(official_256()[0])
    fused = [i for i in range(2, 14, 2) if getattr(g.synthesis, f"layer{i}").fused]
    assert fused == [10, 12]


def test_conv_downsample_equals_conv_then_average():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 8, 8)
    w = torch.randn(6, 4, 3, 3)
    ref = F.avg_pool2d(F.conv2d(x, w, padding=1), 2)
    assert (conv_downsample(x, w) - ref).abs().max() < 1e-5


def test_generator_output_range_and_shapes():
    g = StyleGANGenerator(tiny_generator_config()).eval()
    z = torch.randn(3, 32)
    with torch.no_grad():
        wp = g.mapping(z)
        assert wp.shape == (3, g.num_layers, 32) == (3, 8, 32)
        x = g.synthesis(wp)
    assert x.shape == (3, 3, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    with pytest.raises(ValueError, match=r"\[N, 8, 32\]"):
        g.synthesis(torch.randn(1, 7, 32))


def test_constant_noise_is_deterministic_and_random_is_not():
    g = StyleGANGenerator(tiny_generator_config()).eval()
    for layer in range(g.num_layers):  # noise weights start at zero; make noise matter
        getattr(g.synthesis, f"layer{layer}").epilogue.apply_noise.weight.data.fill_(0.5)
    wp = torch.randn(1, 8, 32)
    with torch.no_grad():
        assert torch.equal(g.synthesis(wp), g.synthesis(wp))
        assert not torch.equal(g.synthesis(wp, noise_mode="random"), g.synthesis(wp, noise_mode="random"))


def test_truncation_only_on_first_layers():
    g = StyleGANGenerator(tiny_generator_config())
    g.truncation.w_avg.normal_()
    wp = torch.randn(2, 8, 32)
    out = g.truncation(wp, 0.0, 3)
    assert torch.allclose(out[:, :3], g.truncation.w_avg.expand(2, 3, 32))
    assert torch.equal(out[:, 3:], wp[:, 3:])
    half = g.truncation(wp, 0.5, 8)
    assert torch.allclose(half, g.truncation.w_avg + 0.5 * (wp - g.truncation.w_avg))


def test_w_avg_tracks_layer_zero():
    g = StyleGANGenerator(tiny_generator_config())
    wp = torch.randn(4, 8, 32)
    g.update_w_avg(wp, beta=0.0)
    assert torch.allclose(g.truncation.w_avg, wp[:, 0].mean(0))


def test_lod_selects_and_blends_resolutions():
    g = StyleGANGenerator(GeneratorConfig(**{**tiny_generator_config().__dict__, "final_tanh": False})).eval()
    wp = torch.randn(1, 8, 32)
    with torch.no_grad():
        full = g.synthesis(wp, lod=0)
        half = g.synthesis(wp, lod=1)
        blend = g.synthesis(wp, lod=0.25)
    assert full.shape[-1] == 32 and half.shape[-1] == 16
    up = F.interpolate(half, scale_factor=2)
    assert torch.allclose(blend, 0.75 * full + 0.25 * up, atol=1e-5)


@pytest.mark.parametrize("resolution", [16, 64, 1024])
def test_any_power_of_two_resolution(resolution):
    cfg = GeneratorConfig(resolution=resolution, z_dim=8, w_dim=8, mapping_layers=1, mapping_fmaps=8,
                          fmaps_base=resolution * 2, fmaps_max=8)
    g = StyleGANGenerator(cfg)
    assert g.num_layers == 2 * int(math.log2(resolution)) - 2
    e = DomainGuidedEncoder(EncoderConfig(resolution=resolution, num_layers=g.num_layers, w_dim=8,
                                          channels_base=2, channels_max=8)).eval()
    d = Discriminator(DiscriminatorConfig(resolution=resolution, fmaps_base=resolution * 2, fmaps_max=8))
    if resolution <= 64:
        with torch.no_grad():
            x = g.synthesis(torch.randn(2, g.num_layers, 8))
            assert e(x).shape == (2, g.num_layers, 8)
            assert d(x).shape == (2, 1)


@pytest.mark.parametrize("resolution", [8, 48, 2048])
def test_bad_resolution_is_refused(resolution):
    with pytest.raises(ConfigError, match="power of two"):
        GeneratorConfig(resolution=resolution)


def test_encoder_eval_is_per_sample_and_bn_gamma_frozen():
    e = DomainGuidedEncoder(EncoderConfig(resolution=32, num_layers=8, w_dim=32, channels_base=8,
                                          channels_max=32)).eval()
    assert not any(m.bn.weight.requires_grad for m in e.modules() if hasattr(m, "bn") and hasattr(m.bn, "running_mean"))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(e(x)[1:2], e(x[1:2]), atol=1e-5)


def test_discriminator_progressive_input_and_minibatch_groups():
    d = Discriminator(DiscriminatorConfig(resolution=32, fmaps_base=256, fmaps_max=16))
    with torch.no_grad():
        assert d(torch.randn(4, 3, 16, 16), lod=1).shape == (4, 1)
        assert d(torch.randn(4, 3, 32, 32), lod=0.5).shape == (4, 1)
        # Consecutive groups: scores of the first group of 4 do not depend on the second group.
        x = torch.randn(8, 3, 32, 32)
        y = x.clone()
        y[4:] = torch.randn(4, 3, 32, 32)
        assert torch.allclose(d(x)[:4], d(y)[:4], atol=1e-5)


def test_vgg_conv4_3_shape_and_conventions():
    torch.manual_seed(0)
    caffe, tv = VGG16Features("caffe"), VGG16Features("torchvision")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert caffe(x).shape == (1, 512, 4, 4)
        assert (caffe(x) >= 0).all()
    pre = caffe.preprocess(x)
    bgr = ((x + 1) * 127.5).flip(1) - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    assert torch.allclose(pre, bgr, atol=1e-4)
    pre = tv.preprocess(x)
    rgb = ((x + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(pre, rgb, atol=1e-5)
