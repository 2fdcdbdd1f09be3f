"""Loading the official .pth files: random state_dicts with exactly the official keys and shapes."""

from __future__ import annotations

import pickle

import pytest
import torch

from idinvert.errors import CheckpointError
from idinvert.formats.official import (load_official_encoder, load_official_generator, load_official_vgg,
                               read_state_dict)
from official_layout import encoder_shapes, generator_shapes, random_state, vgg_shapes


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("official")
    g = random_state(generator_shapes(with_truncation_buffer=True), seed=1)
    g["synthesis.lod"] = torch.tensor(0.0)
    torch.save(g, folder / "styleganinv_ffhq256_generator.pth")
    torch.save(random_state(encoder_shapes(), seed=2), folder / "styleganinv_ffhq256_encoder.pth")
    torch.save(random_state(vgg_shapes(), seed=3), folder / "vgg16.pth")
    return folder


def test_generator_loads_exactly(official_files):
    path = official_files / "styleganinv_ffhq256_generator.pth"
    g = load_official_generator(path)
    assert (g.resolution, g.num_layers, g.w_dim) == (256, 14, 512)
    state = torch.load(path, weights_only=True)
    for k, v in g.state_dict().items():
        assert torch.equal(v, state[k]), k
    # the truncation coefficients come from the code, not the file
    assert "truncation.truncation" not in g.state_dict()
    assert g.synthesis.layer10.fused and g.synthesis.layer12.fused and not g.synthesis.layer8.fused
    with torch.no_grad():
        x = g.synthesis(torch.randn(1, 14, 512))
    assert x.shape == (1, 3, 256, 256) and x.abs().max() <= 1


@pytest.mark.slow
def test_encoder_and_vgg_load(official_files):
    g = load_official_generator(official_files / "styleganinv_ffhq256_generator.pth")
    e = load_official_encoder(official_files / "styleganinv_ffhq256_encoder.pth", g)
    assert not e.training
    assert e.config.channels_max == 1024 and e.config.resolution == 256
    v = load_official_vgg(official_files / "vgg16.pth")
    assert v.convention == "caffe"
    state = torch.load(official_files / "vgg16.pth", weights_only=True)
    assert torch.equal(v.layer21.weight, state["layer21.weight"])


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    state = random_state(generator_shapes())
    del state["synthesis.layer3.conv.weight"]
    state["synthesis.extra"] = torch.zeros(1)
    state["synthesis.output6.bias"] = torch.zeros(4)
    path = tmp_path / "broken_generator.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_official_generator(path)
    message = str(info.value)
    assert "broken_generator.pth" in message
    assert "missing keys: synthesis.layer3.conv.weight" in message
    assert "unexpected keys: synthesis.extra" in message
    assert "synthesis.output6.bias [4]≠[3]" in message
    assert "\n" not in message


@pytest.mark.slow
def test_encoder_for_another_generator_is_refused(official_files, tmp_path):
    state = random_state(encoder_shapes())
    state["block7.fc.weight"] = torch.zeros(14 * 256, 16384)
    for k in ("weight", "bias", "running_mean", "running_var"):
        state[f"block7.bn.bn.{k}"] = torch.zeros(14 * 256)
    torch.save(state, tmp_path / "e.pth")
    g = load_official_generator(official_files / "styleganinv_ffhq256_generator.pth")
    with pytest.raises(CheckpointError, match="14×512"):
        load_official_encoder(tmp_path / "e.pth", g)


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_files_are_read_without_running_code(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"a": Payload()}, f)
    with pytest.raises(CheckpointError, match="not a readable PyTorch weight file"):
        read_state_dict(path)


def test_foreign_and_missing_files(tmp_path):
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pth"):
        read_state_dict(tmp_path / "notes.pth")
    with pytest.raises(CheckpointError, match="no such file"):
        read_state_dict(tmp_path / "absent.pth")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a StyleGAN/IDInvert weight file"):
        load_official_generator(tmp_path / "other.pth")


@pytest.mark.slow
def test_convert_cli_builds_a_pack_that_inverts(official_files, tmp_path):
    from idinvert.cli import main
    from idinvert.pack import load_pack

    out = tmp_path / "pack"
    code = main(["convert", "--generator", str(official_files / "styleganinv_ffhq256_generator.pth"),
                 "--encoder", str(official_files / "styleganinv_ffhq256_encoder.pth"),
                 "--vgg", str(official_files / "vgg16.pth"), "--out", str(out), "--quiet"])
    assert code == 0
    pack = load_pack(out)
    assert pack.perceptual_config.convention == "caffe" and pack.perceptual_config.lambda_vgg == 5e-5
    assert pack.config["framing"]["size"] == 256  # the FFHQ framing of the official face models
    g = load_official_generator(official_files / "styleganinv_ffhq256_generator.pth")
    wp = torch.randn(1, 14, 512)
    with torch.no_grad():
        assert torch.equal(pack.generator.synthesis(wp), g.synthesis(wp))
    # converting again into the same folder is refused unless asked
    assert main(["convert", "--generator", str(official_files / "styleganinv_ffhq256_generator.pth"),
                 "--out", str(out), "--quiet"]) == 2
