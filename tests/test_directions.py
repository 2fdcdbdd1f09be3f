"""Label-free directions (SeFa, GANSpace) against independent computations, the `directions` verb, the
editor's direction sliders, and LEC on known cases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_networks
from idinvert.cli import main
from idinvert.networks.config import EncoderConfig
from idinvert.engine.directions import ganspace, layer_weights, pack_directions, sample_prior_codes, sefa
from idinvert.boundaries import Boundary, load_boundary
from idinvert.engine.editing import manipulate
from idinvert.errors import ConfigError
from idinvert.evaluation import latent_editing_consistency
from idinvert.networks import DCGANConfig, DCGANGenerator, DomainGuidedEncoder
from idinvert.pack import copy_pack, load_pack, save_pack
from idinvert.perceptual import default_perceptual_config

Z = 16  # z_dim of the tiny DCGAN


def tiny_dcgan(seed: int = 0) -> DCGANGenerator:
    torch.manual_seed(seed)
    g = DCGANGenerator(DCGANConfig(resolution=16, z_dim=Z, fmaps=(24, 8)))
    for name, p in g.named_parameters():
        if "convTr" in name:
            p.data.normal_(0, 0.3)
    return g.eval()


def numpy_sefa(weights: list[np.ndarray], num: int) -> tuple[np.ndarray, np.ndarray]:
    """SeFa written independently: rows of A (output units) to unit norm, eigh(AᵀA), largest first."""
    a = np.concatenate(weights, axis=0).astype(np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    values, vectors = np.linalg.eigh(a.T @ a)
    order = np.argsort(values)[::-1][:num]
    return values[order], vectors[:, order].T


def assert_same_directions(ours: np.ndarray, reference: np.ndarray, atol: float = 1e-5) -> None:
    """Equal up to the sign of each direction (eigenvectors have none of their own)."""
    signs = np.sign(np.sum(ours * reference, axis=1, keepdims=True))
    np.testing.assert_allclose(ours, signs * reference, atol=atol)


# --- SeFa -------------------------------------------------------------------------------------------

def test_sefa_equals_numpy_eigh_on_the_style_weights_of_a_tiny_stylegan():
    g, _ = tiny_networks(seed=3)
    state = {k: v.numpy() for k, v in g.state_dict().items()}
    layers = [0, 1, 2, 5]
    found = sefa(g, layers=layers, num=6)
    weights = [state[f"synthesis.layer{i}.epilogue.style_mod.dense.fc.weight"] for i in layers]  # [2·ch, C] each
    values, vectors = numpy_sefa(weights, 6)
    np.testing.assert_allclose(found.values.numpy(), values, rtol=1e-5)
    assert found.layers == tuple(layers) and found.vectors.shape == (6, g.num_layers, g.w_dim)
    assert torch.equal(found.vectors[:, 0], found.vectors[:, -1])  # one unit vector in every row
    assert_same_directions(found.vectors[:, 0].numpy(), vectors)
    np.testing.assert_allclose(found.vectors[:, 0].norm(dim=1).numpy(), 1.0, atol=1e-6)
    assert (found.values[:-1] >= found.values[1:]).all()
    # without the row normalisation: the equalised-lr scale 1/√C of the style layers is part of A
    raw = sefa(g, layers=layers, num=3, normalize=False)
    a = np.concatenate(weights) / np.sqrt(g.w_dim)
    ref_values = np.sort(np.linalg.eigvalsh(a.T @ a))[::-1][:3]
    np.testing.assert_allclose(raw.values.numpy(), ref_values, rtol=1e-5)


def test_sefa_equals_numpy_eigh_on_the_first_layer_of_a_tiny_dcgan():
    g = tiny_dcgan()
    w = g.state_dict()["convTr1.weight"].numpy()  # [z_dim, C, 4, 4]
    a = w.reshape(Z, -1).T  # [C·16, z_dim]: output unit (c, y, x) = Σ_k z_k W[k, c, y, x]
    z = torch.randn(1, Z)
    layer = F.conv_transpose2d(z.view(1, Z, 1, 1), g.convTr1.weight).detach().flatten()
    np.testing.assert_allclose(a @ z[0].numpy(), layer, atol=1e-5)  # the layout of A, checked against the layer
    found = sefa(g, num=5)
    values, vectors = numpy_sefa([a], 5)
    np.testing.assert_allclose(found.values.numpy(), values, rtol=1e-5)
    assert found.layers == (0,) and found.vectors.shape == (5, 1, Z)
    assert_same_directions(found.vectors[:, 0].numpy(), vectors)
    with pytest.raises(ConfigError, match="layer-wise"):
        sefa(g, layers="0")
    with pytest.raises(ConfigError, match="ask for 1 to 16"):
        sefa(g, num=17)


def test_sefa_reads_exactly_the_stylegan2_affines_that_see_each_row():
    from idinvert.networks import StyleGAN2Config, StyleGAN2Generator

    torch.manual_seed(0)
    g = StyleGAN2Generator(StyleGAN2Config(resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=64,
                                           channel_max=16)).eval()
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0].clone()))
             for name, m in g.named_modules() if name.endswith("affine")]
    codes = torch.randn(1, g.num_layers, g.w_dim)
    g.synthesize(codes)
    for row in range(g.num_layers):  # which affines read this row, found by watching their inputs
        readers = [name for name, x in seen.items() if torch.equal(x, codes[:, row])]
        expected = torch.cat([g.get_submodule(n).weight * g.get_submodule(n).weight_gain for n in readers]).double()
        assert readers and torch.equal(layer_weights(g, [row]), expected), row
    for h in hooks:
        h.remove()
    found = sefa(g, layers="1,2", num=3)
    assert found.vectors.shape == (3, g.num_layers, g.w_dim) and found.layers == (1, 2)


# --- GANSpace ---------------------------------------------------------------------------------------

def test_ganspace_is_reproducible_and_equals_numpy_pca():
    g, _ = tiny_networks(seed=1)
    first = ganspace(g, layers="2-4", num=4, samples=500, seed=7)
    again = ganspace(g, layers="2-4", num=4, samples=500, seed=7)
    other = ganspace(g, layers="2-4", num=4, samples=500, seed=8)
    assert torch.equal(first.vectors, again.vectors) and torch.equal(first.values, again.values)
    assert not torch.allclose(first.vectors, other.vectors)
    # the per-layer W+ mapping gives each row its own values: PCA of the three rows together
    x = sample_prior_codes(g, 500, seed=7)[:, 2:5].flatten(1).double().numpy()
    variances, components = np.linalg.eigh(np.cov(x, rowvar=False))
    order = np.argsort(variances)[::-1][:4]
    np.testing.assert_allclose(first.values.numpy(), variances[order], rtol=1e-4)
    ours = first.vectors[:, 2:5].flatten(1).numpy() / np.sqrt(3)  # stored with RMS row norm 1
    assert_same_directions(ours, components[:, order].T, atol=1e-4)
    assert (first.vectors[:, [0, 1, 5]] == 0).all() and first.layers == (2, 3, 4)
    # the prior's spread along each direction, in distance units
    projected = (x - x.mean(0)) @ components[:, order]
    np.testing.assert_allclose(first.scales.numpy(), projected.std(0, ddof=1) / np.sqrt(3), rtol=1e-4)


def test_ganspace_on_a_shared_latent_is_the_pca_of_one_row():
    g = tiny_dcgan()
    found = ganspace(g, num=3, samples=400, seed=0)
    z = sample_prior_codes(g, 400, seed=0)[:, 0].double().numpy()
    variances, components = np.linalg.eigh(np.cov(z, rowvar=False))
    order = np.argsort(variances)[::-1][:3]
    np.testing.assert_allclose(found.values.numpy(), variances[order], rtol=1e-4)
    assert_same_directions(found.vectors[:, 0].numpy(), components[:, order].T, atol=1e-4)
    # a code with equal rows (StyleGAN2's broadcast w): the direction is v in every row
    codes = torch.randn(300, 1, 4).expand(-1, 3, -1)
    stub = type("Stub", (), {"num_layers": 3, "code_shape": (3, 4), "layerwise": True})()
    shared = ganspace(stub, num=2, codes=codes)
    assert torch.equal(shared.vectors[:, 0], shared.vectors[:, 2])
    np.testing.assert_allclose(shared.vectors[:, 0].norm(dim=1).numpy(), 1.0, atol=1e-6)


# --- the verb ---------------------------------------------------------------------------------------

@pytest.fixture()
def pack_copy(tiny_pack_dir, tmp_path) -> Path:
    folder = tmp_path / "pack"
    shutil.copytree(tiny_pack_dir, folder)
    return folder


def test_the_directions_verb_end_to_end(pack_copy, tmp_path):
    out = tmp_path / "sefa"
    assert main(["directions", "--method", "sefa", "--model", str(pack_copy), "--layers", "0-3", "--num", "3",
                 "--preview", "2", "--steps", "3", "--out", str(out), "--add-to-pack", "--quiet"]) == 0
    pack = load_pack(pack_copy)
    reference = sefa(pack.generator, layers="0-3", num=3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "sefa" and manifest["layers"] == [0, 1, 2, 3] and len(manifest["directions"]) == 3
    for k in range(3):
        b = load_boundary(out / f"direction_{k + 1:02d}.npy", pack.code_shape)
        assert b.layers == (0, 1, 2, 3) and b.meta["method"] == "sefa" and b.meta["index"] == k + 1
        assert torch.allclose(b.direction, reference.vectors[k])  # [L, C], the official [1, L, C] on disk
        assert (out / f"direction_{k + 1:02d}.png").is_file()
        assert (out / "tiles" / f"direction_{k + 1:02d}_step03.png").is_file()
    page = (out / "index.html").read_text()
    assert "direction 3" in page and "tiles/direction_01_step01.png" in page and (out / "sheet.png").is_file()
    # --add-to-pack: listed under "directions", files inside the pack, kept by copy_pack
    listed = json.loads((pack_copy / "config.json").read_text())["directions"]
    assert list(listed) == ["sefa_01", "sefa_02", "sefa_03"]
    assert listed["sefa_02"] == {"file": "directions/sefa_02.npy", "layers": [0, 1, 2, 3], "method": "sefa"}
    loaded = pack_directions(pack)
    assert torch.equal(loaded["sefa_01"].direction, load_boundary(out / "direction_01.npy", pack.code_shape).direction)
    copied = load_pack(copy_pack(pack, tmp_path / "copied"))
    assert list(pack_directions(copied)) == ["sefa_01", "sefa_02", "sefa_03"]
    # GANSpace adds its own entries beside SeFa's
    assert main(["directions", "--method", "ganspace", "--model", str(pack_copy), "--num", "2", "--samples", "200",
                 "--preview", "1", "--steps", "2", "--out", str(tmp_path / "gs"), "--add-to-pack", "--quiet"]) == 0
    names = ["sefa_01", "sefa_02", "sefa_03", "ganspace_01", "ganspace_02"]
    assert list(pack_directions(load_pack(pack_copy))) == names
    # a chosen subset keeps config.json's order; an unknown name is one clear error
    assert list(pack_directions(load_pack(pack_copy), ["ganspace_01", "sefa_02"])) == ["sefa_02", "ganspace_01"]
    with pytest.raises(ConfigError, match="no direction 'sefa_09'"):
        pack_directions(load_pack(pack_copy), ["sefa_09"])
    gs = json.loads((tmp_path / "gs" / "manifest.json").read_text())
    assert gs["samples"] == 200 and gs["directions"][0]["prior_std"] > 0


def test_editor_shows_pack_directions_as_sliders(pack_copy, tmp_path):
    from idinvert.server.editor import Editor

    assert main(["directions", "--method", "sefa", "--model", str(pack_copy), "--layers", "4,5", "--num", "2",
                 "--preview", "1", "--steps", "2", "--out", str(tmp_path / "d"), "--add-to-pack", "--quiet"]) == 0
    editor = Editor(load_pack(pack_copy), steps=0, alignment="center")
    sliders = editor.describe()["attributes"]
    assert [s["name"] for s in sliders] == ["direction 1", "direction 2"]
    assert sliders[0]["kind"] == "direction" and sliders[0]["layers"] == [4, 5] and "layers 4,5" in sliders[0]["title"]
    code = torch.randn(1, *editor.pack.code_shape)
    moved = editor.compose(code, editor.parse_params({"edits": {"direction 2": 1.5}}))
    b = editor.directions["direction 2"]
    assert torch.allclose(moved, manipulate(code, b, distances=[1.5])[:, 0])
    assert torch.equal(moved[:, :4], code[:, :4]) and not torch.equal(moved[:, 4:6], code[:, 4:6])


@pytest.fixture(scope="module")
def dcgan_pack_dir(tmp_path_factory) -> Path:
    g = tiny_dcgan()
    enc = DomainGuidedEncoder(EncoderConfig(resolution=16, num_layers=1, w_dim=Z, channels_base=8, channels_max=16))
    folder = tmp_path_factory.mktemp("dcgan") / "pack"
    save_pack(folder, name="tiny-dcgan", generator=g, encoder=enc.eval(),
              perceptual_config=default_perceptual_config("torchvision"))
    return folder


def test_the_verb_on_a_single_latent_pack_and_its_refusals(dcgan_pack_dir, tmp_path, capsys):
    model = ["--model", str(dcgan_pack_dir), "--quiet"]
    assert main(["directions", "--method", "sefa", "--num", "2", "--preview", "1", "--steps", "2",
                 "--out", str(tmp_path / "ok"), *model]) == 0
    b = load_boundary(tmp_path / "ok" / "direction_01.npy", (1, Z))
    assert b.layers == (0,) and torch.allclose(b.direction, sefa(load_pack(dcgan_pack_dir).generator, num=1).vectors[0])
    capsys.readouterr()
    assert main(["directions", "--method", "sefa", "--layers", "0", "--out", str(tmp_path / "l"), *model]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--layers" in err[0] and "layer-wise (W+)" in err[0] and "L = 1" in err[0]
    assert main(["directions", "--method", "ganspace", "--num", "99", "--samples", "50", "--out",
                 str(tmp_path / "n"), *model]) == 2
    assert "--num 99" in capsys.readouterr().err
    assert main(["directions", "--method", "sefa", "--out", str(dcgan_pack_dir), *model]) == 2  # not into the pack
    assert "--out" in capsys.readouterr().err and not (dcgan_pack_dir / "direction_01.npy").exists()
    assert not (tmp_path / "l").exists() and not (tmp_path / "n").exists()


# --- LEC --------------------------------------------------------------------------------------------

class PixelGenerator(torch.nn.Module):
    """G(w) = the code itself as a 1×L×C image: an inversion can be written down exactly."""

    def __init__(self, num_layers: int, w_dim: int) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.num_layers, self.w_dim = num_layers, w_dim

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def synthesize(self, codes: torch.Tensor) -> torch.Tensor:
        return codes[:, None].expand(-1, 3, -1, -1).clamp(-1, 1) * 1.0


def test_lec_on_known_cases():
    torch.manual_seed(0)
    g = PixelGenerator(4, 6)
    codes = torch.rand(5, 4, 6) * 0.5 - 0.25
    b = Boundary(F.normalize(torch.randn(4, 6), dim=1) * 0.1, layers=(1, 2))
    exact = lambda images: images[:, 0]  # noqa: E731 — the true inverse of G on [-1, 1]
    values, size = latent_editing_consistency(g, codes, b, 2.0, exact)
    assert values.shape == (5,) and torch.allclose(values, torch.zeros(5), atol=1e-6)
    assert size == pytest.approx(float((2.0 * b.direction[[1, 2]]).norm()), rel=1e-6)
    # an inversion that is off by a fixed offset δ returns z + δ: LEC = ‖δ‖ for every code
    offset = torch.zeros(4, 6)
    offset[3, 0], offset[0, 5] = 0.03, -0.04
    values, _ = latent_editing_consistency(g, codes, b, 2.0, lambda images: images[:, 0] + offset)
    assert torch.allclose(values, torch.full((5,), 0.05), atol=1e-6)
    # an inversion that forgets the edit on layer 2 (keeps the code's own row) misses d·b[2]
    forget = lambda images: torch.cat([images[:, 0, :2], codes[:, 2:3], images[:, 0, 3:]], dim=1)  # noqa: E731
    values, _ = latent_editing_consistency(g, codes, b, 2.0, forget)
    assert torch.allclose(values, torch.full((5,), float(2.0 * b.direction[2].norm())), atol=1e-6)
    with pytest.raises(ValueError, match="non-zero"):
        latent_editing_consistency(g, codes, b, 0.0, exact)
