"""The bundled default pack: complete, sane, and used when no --model is given."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from idinvert.cli import main
from idinvert.errors import CheckpointError
from idinvert.pack import bundled_pack_dir, load_pack

from conftest import shared_data, shared_test_photos

EDITS = ("age", "gender", "smile", "eyeglasses")
BUNDLED = {"dcgan-faces64": (1, 100), "utkface64": (10, 256)}  # pack → [L, C]
DEFAULT = "dcgan-faces64"  # it edits real faces best: benchmarks/results/real_faces.md


@pytest.fixture(scope="module", params=sorted(BUNDLED))
def bundled(request):
    if not (bundled_pack_dir(request.param) / "config.json").is_file():
        pytest.fail(f"the pack {request.param} is not bundled (src/idinvert/packs/{request.param})")
    return load_pack(request.param, with_discriminator=True)


def test_the_default_pack():
    assert load_pack().name == DEFAULT and bundled_pack_dir() == bundled_pack_dir(DEFAULT)


def test_the_retired_pack_says_how_to_make_it(capsys, tmp_path):
    with pytest.raises(CheckpointError, match="no stylegan-faces64 model pack: .*scripts/stylegan_pack/build.sh"):
        load_pack("stylegan-faces64")
    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    assert main(["invert", str(tmp_path / "x.png"), "--model", "stylegan-faces64", "--out", str(tmp_path / "o"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "build.sh" in err


def test_the_bundled_packs_are_complete(bundled):
    pack = bundled
    assert pack.resolution == 64 and tuple(pack.code_shape) == BUNDLED[pack.name]
    for net in (pack.generator, pack.encoder, pack.conventional_encoder, pack.discriminator):
        assert net is not None
        assert all(torch.isfinite(p).all() for p in net.parameters())
        assert all(p.dtype == torch.float32 for p in net.parameters())  # float16 files load as float32
    config = pack.config
    assert config["framing"]["size"] == 64
    assert set(EDITS) <= set(config["boundaries"]) and len(config["boundaries"]) >= 6
    assert "predictor" in config
    folder = bundled_pack_dir(pack.name)
    assert (folder / "README.md").read_text().count("non-commercial") >= 1
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 100 * 2**20


def test_samples_are_faces_not_noise(bundled):
    """Generated images have the smooth, skin-toned centre of a face crop, not uniform noise."""
    g = bundled.generator
    with torch.no_grad():
        x = g(torch.randn(16, g.z_dim, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (16, 3, 64, 64) and (x.abs() > 1).float().mean() < 0.05  # StyleGANs overshoot a bit
    box = slice(24, 40) if bundled.name == "utkface64" else slice(36, 48)  # the cheeks and nose of each framing
    centre = x[:, :, box, 26:38]
    neighbour_diff = (centre[..., 1:] - centre[..., :-1]).abs().mean()
    assert neighbour_diff < 0.2  # noise in [-1, 1] would give ≈ 0.67
    assert (centre[:, 0].mean() > centre[:, 2].mean())  # red above blue: skin


def test_invert_a_test_photo_without_any_option(tmp_path):
    (photo,) = shared_test_photos(shared_data("utkface", "images.tar"), shared_data("utkface", "labels.csv"), 1,
                                  tmp_path)
    out = tmp_path / "out"
    assert main(["invert", str(photo), "--out", str(out), "--steps", "30", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["name"] == DEFAULT
    stem = photo.name.split(".")[0]
    ori, enc, inv = (np.asarray(Image.open(next(out.glob(f"{stem}*_{k}.png"))), dtype=np.float64) / 127.5 - 1
                     for k in ("ori", "enc", "inv"))
    from idinvert.metrics import lpips_distance

    as_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float()  # noqa: E731
    lpips_enc, lpips_inv = (float(lpips_distance(as_tensor(a), as_tensor(ori))) for a in (enc, inv))
    # optimisation improves on the encoder's start in what it optimises (pixels + VGG features); pixel MSE
    # alone need not fall on a photo in another framing (here UTKFace's, unaligned)
    assert lpips_inv < lpips_enc - 0.02
    assert ((inv - ori) ** 2).mean() < 0.12  # a face, not a blur: PSNR above ≈ 15 dB


def test_edit_by_attribute_name_moves_the_predicted_attribute(bundled):
    from idinvert.attributes import load_predictor
    from idinvert.boundaries import load_boundary
    from idinvert.engine.editing import manipulate

    g = bundled.generator
    codes = g.sample_codes(torch.randn(8, g.z_dim, generator=torch.Generator().manual_seed(1)), truncation_psi=0.7)
    boundary = load_boundary(bundled.path / bundled.config["boundaries"]["smile"], bundled.code_shape)
    predictor = load_predictor(bundled).eval()
    with torch.no_grad():
        edited = manipulate(codes, boundary, distances=[-3.0, 3.0])  # [N, 2, L, C]
        less, more = (predictor.score(g.synthesize(edited[:, k]), "Smiling") for k in (0, 1))
    assert (more > less).float().mean() >= 0.75
