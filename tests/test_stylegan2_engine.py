"""A StyleGAN2 pack through the whole engine: the pack's discriminator slot, every inversion method,
every verb, encoder training, evaluation, the editor, and the export back to rosinality's format."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from idinvert.cli import main
from idinvert.networks.config import DiscriminatorConfig, EncoderConfig
from idinvert.boundaries import load_boundary, save_boundary
from idinvert.errors import CheckpointError
from idinvert.formats.rosinality import load_rosinality_checkpoint
from idinvert.formats.stylegan2 import load_stylegan2
from idinvert.engine.inversion import InversionConfig, invert
from idinvert.networks import (Discriminator, DomainGuidedEncoder, StyleGAN2Config, StyleGAN2Discriminator,
                               StyleGAN2Generator)
from idinvert.pack import load_pack, save_pack, update_pack
from idinvert.perceptual import default_perceptual_config

from conftest import shared_data

RES, C = 32, 16
L = 8  # num_ws = 2·log2(32) − 2


def tiny_config() -> StyleGAN2Config:
    # rosinality's layout (channel_max 512 at every width but tiny): channels(r) = min(256 // r, 16)
    return StyleGAN2Config(resolution=RES, z_dim=C, w_dim=C, mapping_layers=2, channel_base=256, channel_max=16)


def tiny_stylegan2(seed: int = 0) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    torch.manual_seed(seed)
    g, d = StyleGAN2Generator(tiny_config()).eval(), StyleGAN2Discriminator(tiny_config()).eval()
    with torch.no_grad():  # non-zero noise strengths and biases, and a w_avg from samples
        for p in list(g.parameters()) + list(d.parameters()):
            p.add_(0.05 * torch.randn_like(p))
        g.mapping.w_avg.copy_(g.mapping(torch.randn(256, C)).mean(0))
    return g, d


@pytest.fixture(scope="module")
def sg2_pack_dir(tmp_path_factory) -> Path:
    g, d = tiny_stylegan2()
    enc = EncoderConfig(resolution=RES, num_layers=L, w_dim=C, channels_base=8, channels_max=32)
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("sg2") / "tiny-sg2"
    save_pack(folder, name="tiny-sg2", generator=g, discriminator=d, encoder=DomainGuidedEncoder(enc).eval(),
              conventional_encoder=DomainGuidedEncoder(enc).eval(),
              perceptual_config=default_perceptual_config("torchvision"))
    files, names = {}, {}
    for name, layers in (("smile", [0, 1, 2, 3]), ("age", None)):
        rows = torch.nn.functional.normalize(torch.randn(L, C), dim=1)
        save_boundary(folder.parent / f"{name}.npy", rows[None], layers=layers)  # W+ shape [1, L, C]
        files[f"boundaries/{name}.npy"] = folder.parent / f"{name}.npy"
        names[name] = f"boundaries/{name}.npy"
    update_pack(folder, config_updates={"boundaries": names}, files=files)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        paths.append(folder / f"p{i}.png")
        Image.fromarray(rng.integers(0, 255, (RES, RES, 3), dtype=np.uint8)).save(paths[-1])
    return paths


# --- the pack's discriminator slot -----------------------------------------------------------------------
def test_pack_stores_a_stylegan2_discriminator(sg2_pack_dir):
    config = json.loads((sg2_pack_dir / "config.json").read_text())
    assert config["generator_kind"] == "stylegan2" and config["discriminator_kind"] == "stylegan2"
    pack = load_pack(sg2_pack_dir, with_discriminator=True)
    _, d = tiny_stylegan2()
    assert isinstance(pack.discriminator, StyleGAN2Discriminator)
    x = torch.rand(4, 3, RES, RES) * 2 - 1
    with torch.no_grad():
        assert torch.equal(pack.discriminator(x), d(x))
    assert load_pack(sg2_pack_dir).discriminator is None  # loaded only on request, as before


def test_packs_without_discriminator_kind_load_the_stylegan_discriminator(tiny_pack_dir, tmp_path):
    """Packs written before the field hold a StyleGAN v1 D_basic; an unknown kind is refused in one line."""
    from idinvert.networks.config import to_dict
    from safetensors.torch import save_file

    d = Discriminator(DiscriminatorConfig(resolution=32, fmaps_base=256, fmaps_max=16))
    folder = tmp_path / "old"
    import shutil

    shutil.copytree(tiny_pack_dir, folder)
    save_file({k: v.contiguous() for k, v in d.state_dict().items()}, str(folder / "discriminator.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    config["discriminator"] = to_dict(d.config)
    config.pop("discriminator_kind", None)
    (folder / "config.json").write_text(json.dumps(config))
    assert isinstance(load_pack(folder, with_discriminator=True).discriminator, Discriminator)
    config["discriminator_kind"] = "biggan"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown discriminator_kind 'biggan'"):
        load_pack(folder, with_discriminator=True)


def test_convert_keeps_the_discriminator(tmp_path):
    path = shared_data("stylegan2-fixtures", "sg2ada-tiny32.pkl")
    assert main(["convert", "--stylegan2", str(path), "--out", str(tmp_path / "pack"), "--quiet"]) == 0
    pack = load_pack(tmp_path / "pack", with_discriminator=True)
    _, d, _ = load_stylegan2(path)
    x = torch.rand(4, 3, pack.resolution, pack.resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(pack.discriminator(x), d(x))
    assert pack.config["discriminator_kind"] == "stylegan2"


# --- inversion and the verbs -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["in-domain", "encoder", "mse", "conventional"])
def test_every_inversion_method(sg2_pack_dir, method):
    pack = load_pack(sg2_pack_dir)
    with torch.no_grad():  # images the generator can make
        x = pack.generator(torch.randn(2, C, generator=torch.Generator().manual_seed(5)))
    result = invert(x, pack, InversionConfig(method=method, steps=10))
    assert result.codes.shape == (2, L, C) and result.reconstructions.shape == (2, 3, RES, RES)
    if method in ("in-domain", "mse"):
        assert (result.losses["total"][-1] < result.losses["total"][0]).all()
    mean = invert(x, pack, InversionConfig(method="mse", steps=0, init="mean"))
    assert torch.allclose(mean.codes, pack.generator.mean_code().expand(2, L, C))


def test_every_verb_runs_on_a_stylegan2_pack(sg2_pack_dir, photos, tmp_path):
    model = ["--model", str(sg2_pack_dir), "--quiet"]
    inv = tmp_path / "inv"
    assert main(["invert", *map(str, photos[:2]), "--out", str(inv), "--steps", "2", *model]) == 0
    codes = np.load(inv / "codes.npy")
    assert codes.shape == (2, L, C)
    # a W+ boundary [1, L, C] from a file, on some layers
    b = torch.nn.functional.normalize(torch.randn(L, C, generator=torch.Generator().manual_seed(2)), dim=1)
    save_boundary(tmp_path / "b.npy", b[None])
    assert main(["edit", str(inv), "--boundary", str(tmp_path / "b.npy"), "--distances=-2,2", "--steps", "3",
                 "--layers", "2-5", "--out", str(tmp_path / "e"), *model]) == 0
    edited = np.load(tmp_path / "e" / "codes.npy")
    moved = np.zeros((L, C), np.float32)
    moved[2:6] = 2 * b[2:6].numpy()
    assert edited.shape == (2, 3, L, C) and np.allclose(edited[:, 2] - codes, moved, atol=1e-5)
    # the pack's boundary (with its layers 0-3)
    assert main(["edit", str(inv), "--attribute", "smile", "--steps", "3", "--out", str(tmp_path / "s"), *model]) == 0
    smile = load_boundary(sg2_pack_dir / "boundaries" / "smile.npy", (L, C))
    assert smile.layers == (0, 1, 2, 3)
    edited = np.load(tmp_path / "s" / "codes.npy")
    assert np.allclose(edited[:, 2, 4:], codes[:, 4:]) and not np.allclose(edited[:, 2, :4], codes[:, :4])
    assert main(["interpolate", str(inv), str(inv), "--steps", "1", "--out", str(tmp_path / "i"), *model]) == 0
    assert np.load(tmp_path / "i" / "codes.npy").shape[-2:] == (L, C)
    assert main(["mix", str(inv), str(inv), "--layer-start", "4", "--out", str(tmp_path / "m"), *model]) == 0
    mixed = np.load(tmp_path / "m" / "codes.npy")  # [styles, contents, L, C]
    assert np.allclose(mixed[0, 1, :4], codes[1, :4]) and np.allclose(mixed[0, 1, 4:], codes[0, 4:])
    assert main(["diffuse", "--target", str(photos[0]), "--context", str(photos[1]), "--crop-size", "12",
                 "--center-x", "16", "--center-y", "16", "--steps", "2", "--out", str(tmp_path / "d"), *model]) == 0
    assert np.load(tmp_path / "d" / "codes.npy").shape[-2:] == (L, C)


# --- encoder training ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data32(photos, tmp_path_factory) -> Path:
    from idinvert.datasets import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "prepared"
    prepare_dataset(photos[0].parent, out, resolution=RES)
    return out


ENC_ARGS = ["--batch", "4", "--kimg", "0.008", "--channels-base", "8", "--channels-max", "32", "--quiet",
            "--snapshot-kimg", "0.004"]


def test_encoders_train_against_the_packs_stylegan2_discriminator(sg2_pack_dir, data32, tmp_path):
    assert main(["train-encoder", "--pack", str(sg2_pack_dir), "--data", str(data32),
                 "--run-dir", str(tmp_path / "enc"), *ENC_ARGS]) == 0
    assert main(["train-conventional", "--pack", str(tmp_path / "enc" / "pack"), "--run-dir",
                 str(tmp_path / "conv"), *ENC_ARGS]) == 0
    before = load_pack(sg2_pack_dir, with_discriminator=True)
    pack = load_pack(tmp_path / "conv" / "pack", with_discriminator=True)
    assert pack.generator.kind == "stylegan2" and isinstance(pack.discriminator, StyleGAN2Discriminator)
    # D was fine-tuned alongside E; G is the pack's, untouched
    assert not torch.equal(pack.discriminator.b4.out.weight, before.discriminator.b4.out.weight)
    for k, v in before.generator.state_dict().items():
        assert torch.equal(v, pack.generator.state_dict()[k]), k
    log = [json.loads(line) for line in (tmp_path / "enc" / "log.jsonl").read_text().splitlines()]
    assert {"pix", "vgg", "adv", "d_loss", "r1"} <= set(log[-1])
    assert main(["export", str(tmp_path / "enc"), "--out", str(tmp_path / "exported"), "--quiet"]) == 0
    assert isinstance(load_pack(tmp_path / "exported", with_discriminator=True).discriminator, StyleGAN2Discriminator)


def test_a_stylegan2_pack_without_discriminator_trains_a_fresh_stylegan2_one(sg2_pack_dir, data32, tmp_path):
    bare = tmp_path / "bare"
    pack = load_pack(sg2_pack_dir)
    save_pack(bare, name="bare", generator=pack.generator, perceptual_config=pack.perceptual_config)
    assert main(["train-encoder", "--pack", str(bare), "--data", str(data32), "--run-dir", str(tmp_path / "enc"),
                 *ENC_ARGS]) == 0
    trained = load_pack(tmp_path / "enc" / "pack", with_discriminator=True)
    assert isinstance(trained.discriminator, StyleGAN2Discriminator)
    assert trained.discriminator.config == pack.generator.config  # the generator's widths
    # a batch that the minibatch-std groups (4) cannot divide is refused in one line, before training
    assert main(["train-encoder", "--pack", str(bare), "--data", str(data32), "--run-dir", str(tmp_path / "six"),
                 *ENC_ARGS[:1], "6", *ENC_ARGS[2:]]) == 2
    assert not (tmp_path / "six").exists()


# --- evaluation and the editor ---------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_runs_on_a_stylegan2_pack(sg2_pack_dir, data32, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--pack", str(sg2_pack_dir), "--images", str(data32), "--out", str(out),
                 "--skip", "fid", "--count", "4", "--steps", "2", "--steps-mse", "2", "--pairs", "2",
                 "--lambda-dom-ablation", "0", "--edit-range=-2,2,3", "--lec-count", "2", "--examples", "2",
                 "--threads", "1", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {r["key"]: r for r in results["table1"]["rows"]}
    assert set(rows) == {"conventional", "encoder", "mse-2", "in-domain"}
    assert all(r["metrics"]["mse"]["count"] == 4 for r in rows.values())
    assert results["table2"]["manipulation"]["boundaries"] == ["age", "smile"]


def test_editor_serves_a_stylegan2_pack(sg2_pack_dir, tmp_path):
    pytest.importorskip("flask")
    from idinvert.server.app import ServerOptions, create_app

    app = create_app(load_pack(sg2_pack_dir), ServerOptions(steps=2, alignment="center", temp_parent=tmp_path,
                                                                samples={}))
    try:
        client = app.test_client()
        info = client.get("/api/info").get_json()
        assert info["pack"]["code_shape"] == [L, C] and info["mix"]["layers"] == L
        sid = client.post("/api/session").get_json()["session"]
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
        assert client.post(f"/api/session/{sid}/photo/a", data={"file": (io.BytesIO(buffer.getvalue()), "a.png")}
                           ).status_code == 200
        assert client.post(f"/api/session/{sid}/a/invert", json={"face": 0}).status_code == 202
        deadline = time.monotonic() + 60
        while not client.get(f"/api/session/{sid}/status").get_json()["slots"]["a"]["ready"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = client.post(f"/api/session/{sid}/render", json={"edits": {"smile": 2.0}})
        assert r.status_code == 200 and Image.open(io.BytesIO(r.data)).size == (RES, RES)
    finally:
        app.extensions["idinvert"].close()


# --- back to rosinality ----------------------------------------------------------------------------------
def test_export_rosinality_reproduces_the_pack(sg2_pack_dir, tmp_path):
    out = tmp_path / "g.pt"
    assert main(["export-rosinality", str(sg2_pack_dir), "--out", str(out), "--quiet"]) == 0
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert {"g_ema", "d", "latent_avg"} <= set(ckpt)
    g, d, _ = load_rosinality_checkpoint(out)
    pack = load_pack(sg2_pack_dir, with_discriminator=True)
    ws = torch.randn(3, L, C, generator=torch.Generator().manual_seed(4))
    x = torch.rand(4, 3, RES, RES) * 2 - 1
    with torch.no_grad():
        assert torch.equal(g.synthesize(ws), pack.generator.synthesize(ws))
        assert torch.equal(d(x), pack.discriminator(x))
    assert torch.equal(ckpt["latent_avg"], pack.generator.mapping.w_avg)
    # refusals: an existing file, and a pack that is not StyleGAN2
    assert main(["export-rosinality", str(sg2_pack_dir), "--out", str(out), "--quiet"]) == 2
    assert main(["export-rosinality", "default", "--out", str(tmp_path / "v1.pt"), "--quiet"]) == 2
    assert not (tmp_path / "v1.pt").exists()
