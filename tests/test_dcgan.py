"""A Z-space generator (DCGAN) through the whole engine: conversion, every verb, training, the editor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from idinvert.cli import main
from idinvert.networks.config import EncoderConfig
from idinvert.boundaries import load_boundary, save_boundary
from idinvert.errors import CheckpointError, ConfigError
from idinvert.formats.dcgan import infer_dcgan_config, load_dcgan_generator
from idinvert.engine.inversion import InversionConfig, invert
from idinvert.networks import DCGANConfig, DCGANGenerator, DomainGuidedEncoder
from idinvert.pack import load_pack, save_pack, update_pack
from idinvert.perceptual import default_perceptual_config

Z = 16  # z_dim of the tiny DCGAN: codes [N, 1, 16]


class ReferenceDCGAN(nn.Module):
    """The architecture of generateme's ``DCGan.Generator`` written out plainly (its module cannot be
    imported: the package's ``__init__`` starts a Flask app), for any widths."""

    def __init__(self, z_dim: int, widths: list[int]) -> None:
        super().__init__()
        chans = [z_dim, *widths, 3]
        for i in range(len(chans) - 1):
            setattr(self, f"convTr{i + 1}", nn.ConvTranspose2d(chans[i], chans[i + 1], 4, 1 if i == 0 else 2,
                                                              0 if i == 0 else 1, bias=False))
            if i < len(widths):
                setattr(self, f"batchNorm{i + 1}", nn.BatchNorm2d(chans[i + 1]))
        self.depth = len(chans) - 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z
        for i in range(1, self.depth):
            x = F.relu_(getattr(self, f"batchNorm{i}")(getattr(self, f"convTr{i}")(x)))
        return torch.tanh(getattr(self, f"convTr{self.depth}")(x))


def randomised_reference(seed: int = 0) -> ReferenceDCGAN:
    torch.manual_seed(seed)
    ref = ReferenceDCGAN(Z, [32, 16, 8])
    for name, buf in ref.named_buffers():
        if "running_mean" in name:
            buf.normal_(0, 0.1)
        elif "running_var" in name:
            buf.uniform_(0.5, 2.0)
    for name, p in ref.named_parameters():
        if "convTr" in name:  # DCGAN's N(0, 0.02) init gives nearly flat images at this size
            p.data.normal_(0, 0.3)
        elif "batchNorm" in name:
            p.data.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
    return ref.eval()


def test_conversion_is_bit_identical_to_the_original_module(tmp_path):
    ref = randomised_reference()
    path = tmp_path / "dcgan.pt"
    torch.save(ref.state_dict(), path)
    g = load_dcgan_generator(path)
    assert g.config == DCGANConfig(resolution=32, z_dim=Z, fmaps=(32, 16, 8))
    z = torch.randn(5, Z)
    with torch.no_grad():
        assert torch.equal(g.synthesize(g.sample_codes(z)), ref(z.view(5, Z, 1, 1)))
    assert g.code_shape == (1, Z) and not g.layerwise and torch.equal(g.mean_code(), torch.zeros(1, Z))


def test_the_generateme_face_model_converts_bit_identically(tmp_path):
    pytest.importorskip("idinvert.formats.dcgan")
    try:
        from idinvert.formats.dcgan import generateme_weights
        path = generateme_weights()
    except CheckpointError as exc:
        pytest.skip(str(exc))
    state = torch.load(path, map_location="cpu", weights_only=True)
    ref = ReferenceDCGAN(100, [512, 256, 128, 64])
    ref.load_state_dict(state)
    ref.eval()
    assert main(["convert", "--dcgan", "generateme", "--out", str(tmp_path / "pack"), "--quiet"]) == 0
    pack = load_pack(tmp_path / "pack")
    z = torch.randn(4, 100, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(pack.generator.synthesize(z[:, None]), ref(z.view(4, 100, 1, 1)))
    assert sum(p.numel() for p in pack.generator.parameters()) == 3_576_704
    assert json.loads((tmp_path / "pack" / "config.json").read_text())["generator_kind"] == "dcgan"


def test_crafted_dcgan_files_are_refused_before_building(tmp_path):
    with pytest.raises(CheckpointError, match="not a DCGAN"):
        infer_dcgan_config({"foo": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unsupported DCGAN"):  # a claimed width of a million channels
        infer_dcgan_config({"convTr1.weight": torch.zeros(1, 1, 4, 4).expand(1, 10**6, 4, 4),
                            "convTr2.weight": torch.zeros(1, 3, 4, 4).expand(10**6, 3, 4, 4)})
    with pytest.raises(CheckpointError, match="do not connect"):
        infer_dcgan_config({"convTr1.weight": torch.zeros(4, 8, 4, 4), "convTr2.weight": torch.zeros(9, 3, 4, 4)})


# --- the engine on a tiny DCGAN pack ---------------------------------------------------------------

@pytest.fixture(scope="module")
def dcgan_pack_dir(tmp_path_factory) -> Path:
    g = load_dcgan_generator_from(randomised_reference())
    torch.manual_seed(1)
    enc = EncoderConfig(resolution=32, num_layers=1, w_dim=Z, channels_base=8, channels_max=32)
    folder = tmp_path_factory.mktemp("dcgan") / "tiny-dcgan"
    save_pack(folder, name="tiny-dcgan", generator=g, encoder=DomainGuidedEncoder(enc).eval(),
              conventional_encoder=DomainGuidedEncoder(enc).eval(),
              perceptual_config=default_perceptual_config("torchvision"))
    b = folder.parent / "smile.npy"
    save_boundary(b, torch.nn.functional.normalize(torch.randn(1, Z), dim=1))
    update_pack(folder, config_updates={"boundaries": {"smile": "boundaries/smile.npy"}},
                files={"boundaries/smile.npy": b})
    return folder


def load_dcgan_generator_from(ref: ReferenceDCGAN) -> DCGANGenerator:
    g = DCGANGenerator(infer_dcgan_config(ref.state_dict()))
    g.load_state_dict(ref.state_dict())
    return g.eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        paths.append(folder / f"p{i}.png")
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(paths[-1])
    return paths


@pytest.mark.parametrize("method", ["in-domain", "encoder", "mse", "conventional"])
def test_every_inversion_method_works_in_z(dcgan_pack_dir, method):
    pack = load_pack(dcgan_pack_dir)
    with torch.no_grad():  # photos the generator can make, so the optimisation has somewhere to go
        x = pack.generator.synthesize(torch.randn(2, 1, Z, generator=torch.Generator().manual_seed(5)))
    result = invert(x, pack, InversionConfig(method=method, steps=20))
    assert result.codes.shape == (2, 1, Z) and result.reconstructions.shape == (2, 3, 32, 32)
    if method in ("in-domain", "mse"):
        first, last = result.losses["total"][0], result.losses["total"][-1]
        assert (last < first).all()
        assert "dom" in result.losses if method == "in-domain" else "dom" not in result.losses
    mean = invert(x, pack, InversionConfig(method="mse", steps=0, init="mean"))
    assert torch.equal(mean.codes, torch.zeros(2, 1, Z))


def test_every_verb_runs_on_a_dcgan_pack(dcgan_pack_dir, photos, tmp_path, capsys):
    model = ["--model", str(dcgan_pack_dir), "--quiet"]
    inv = tmp_path / "inv"
    assert main(["invert", *map(str, photos), "--out", str(inv), "--steps", "2", *model]) == 0
    codes = np.load(inv / "codes.npy")
    assert codes.shape == (2, 1, Z)
    assert main(["edit", str(inv), "--attribute", "smile", "--steps", "3", "--out", str(tmp_path / "e"), *model]) == 0
    edited = np.load(tmp_path / "e" / "codes.npy")
    b = load_boundary(dcgan_pack_dir / "boundaries" / "smile.npy", (1, Z)).direction.numpy()
    assert edited.shape == (2, 3, 1, Z) and np.allclose(edited[:, 2] - codes, 3 * b, atol=1e-5)
    assert main(["interpolate", str(inv), str(inv), "--steps", "1", "--out", str(tmp_path / "i"), *model]) == 0
    assert np.load(tmp_path / "i" / "codes.npy").shape[-2:] == (1, Z)
    assert main(["diffuse", "--target", str(photos[0]), "--context", str(photos[1]), "--steps", "2",
                 "--out", str(tmp_path / "d"), *model]) == 0
    # the layer-wise operations refuse, with one line that names the reason, and write nothing
    capsys.readouterr()
    assert main(["mix", str(inv), str(inv), "--out", str(tmp_path / "m"), *model]) == 2
    assert main(["edit", str(inv), "--attribute", "smile", "--layers", "0", "--out", str(tmp_path / "l"), *model]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("layer-wise (W+)" in line and "L = 1" in line for line in err)
    assert not (tmp_path / "m").exists() and not (tmp_path / "l").exists()


def test_mixing_single_row_codes_is_refused():
    from idinvert.engine.editing import mix

    with pytest.raises(ConfigError, match="single row"):
        mix(torch.zeros(1, 1, Z), torch.zeros(1, 1, Z))


def test_encoders_train_for_a_dcgan_pack_without_a_discriminator(dcgan_pack_dir, photos, tmp_path):
    from idinvert.datasets import prepare_dataset

    data = tmp_path / "data"
    prepare_dataset(photos[0].parent, data, resolution=32)
    base = ["--batch", "2", "--kimg", "0.004", "--channels-base", "8", "--channels-max", "32", "--quiet",
            "--snapshot-kimg", "0.004"]
    assert main(["train-conventional", "--pack", str(dcgan_pack_dir), "--run-dir", str(tmp_path / "conv"), *base]) == 0
    assert main(["train-encoder", "--pack", str(tmp_path / "conv" / "pack"), "--data", str(data), "--warm-start",
                 "--run-dir", str(tmp_path / "enc"), *base]) == 0
    pack = load_pack(tmp_path / "enc" / "pack", with_discriminator=True)
    assert pack.generator.kind == "dcgan" and pack.discriminator is not None  # D trained from scratch, kept
    assert pack.encoder.config.num_layers == 1 and pack.conventional_encoder is not None


def test_editor_hides_style_mixing_for_a_single_latent(dcgan_pack_dir, tmp_path):
    pytest.importorskip("flask")
    from idinvert.server.app import ServerOptions, create_app

    app = create_app(load_pack(dcgan_pack_dir), ServerOptions(steps=1, alignment="center", temp_parent=tmp_path,
                                                                samples={}))
    try:
        info = app.test_client().get("/api/info").get_json()
        assert info["mix"] is None and info["pack"]["code_shape"] == [1, Z] and info["pack"]["code_space"] == "z"
    finally:
        app.extensions["idinvert"].close()
