from __future__ import annotations

import json
import math

import pytest
import torch

from idinvert.errors import CheckpointError, ConfigError
from idinvert.pack import load_pack, resolve_pack, save_pack
from idinvert.perceptual import TORCHVISION_LAMBDA_VGG, default_perceptual_config

from conftest import tiny_networks


def test_roundtrip_is_exact(tiny_pack_dir):
    g, e = tiny_networks()
    pack = load_pack(tiny_pack_dir)
    for k, v in g.state_dict().items():
        assert torch.equal(pack.generator.state_dict()[k], v), k
    for k, v in e.state_dict().items():
        assert torch.equal(pack.encoder.state_dict()[k], v), k
    assert pack.perceptual_config.convention == "torchvision"
    assert pack.perceptual_config.lambda_vgg == TORCHVISION_LAMBDA_VGG
    assert (tiny_pack_dir / "README.md").is_file()
    assert not pack.generator.training and not pack.encoder.training


def test_half_precision_pack_is_close(tmp_path):
    g, e = tiny_networks()
    save_pack(tmp_path / "half", name="half", generator=g, encoder=e, half=True,
              perceptual_config=default_perceptual_config("torchvision"))
    pack = load_pack(tmp_path / "half")
    wp = torch.randn(2, g.num_layers, g.w_dim)
    with torch.no_grad():
        assert (pack.generator.synthesis(wp) - g.synthesis(wp)).abs().max() < 0.02
    assert pack.generator.synthesis.layer1.conv.weight.dtype == torch.float32


def test_existing_folder_is_not_overwritten(tiny_pack_dir):
    g, _ = tiny_networks()
    with pytest.raises(CheckpointError, match="already exists"):
        save_pack(tiny_pack_dir, name="x", generator=g, perceptual_config=default_perceptual_config("torchvision"))


def test_broken_packs_give_one_line_errors(tiny_pack_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_pack_dir, broken)
    (broken / "encoder.safetensors").unlink()
    with pytest.raises(CheckpointError, match="encoder.safetensors is missing"):
        load_pack(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_pack(broken)
    (broken / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not an idinvert model pack"):
        load_pack(broken)
    with pytest.raises(CheckpointError, match="no such model pack"):
        resolve_pack(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a model pack folder"):
        resolve_pack(tmp_path / "file")


def test_truncated_weights_file(tiny_pack_dir, tmp_path):
    import shutil

    broken = tmp_path / "cut"
    shutil.copytree(tiny_pack_dir, broken)
    data = (broken / "generator.safetensors").read_bytes()
    (broken / "generator.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="generator.safetensors"):
        load_pack(broken)


def test_copy_pack_keeps_listed_files_and_halves_chosen_networks(tiny_pack_dir, tmp_path):
    import shutil

    from idinvert.boundaries import save_boundary
    from idinvert.pack import copy_pack, update_pack

    src = tmp_path / "src"
    shutil.copytree(tiny_pack_dir, src)
    save_boundary(tmp_path / "b.npy", torch.ones(1, 8, 32) / 32 ** 0.5, layers=[1])
    update_pack(src, files={"boundaries/b.npy": tmp_path / "b.npy"}, config_updates={"boundaries": {"b": "boundaries/b.npy"},
                                                                                     "framing": {"note": 1}})
    copy_pack(load_pack(src), tmp_path / "dst", half=("encoder",))
    dst = load_pack(tmp_path / "dst")
    assert dst.config["boundaries"] == {"b": "boundaries/b.npy"} and dst.config["framing"] == {"note": 1}
    assert dst.file("boundaries/b.npy").is_file()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "dst" / "encoder.safetensors"), "pt") as f:
        assert f.get_tensor("block0.conv.weight").dtype == torch.float16
    with safe_open(str(tmp_path / "dst" / "generator.safetensors"), "pt") as f:
        assert f.get_tensor("synthesis.layer1.conv.weight").dtype == torch.float32


def test_a_written_pack_has_the_usual_modes(tiny_pack_dir, tmp_path):
    """Not the private modes of its staging folder (0700) and of safetensors' files (0600)."""
    import os

    from idinvert.pack import copy_pack

    mask = os.umask(0o022)
    try:
        copy_pack(load_pack(tiny_pack_dir), tmp_path / "dst")
    finally:
        os.umask(mask)
    assert (tmp_path / "dst").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "dst").iterdir() if p.is_file()} == {0o644}


def test_local_edit_settings_are_read_from_the_framing_and_checked(tmp_path):
    import shutil

    from idinvert.pack import bundled_pack_dir, load_pack

    pack = load_pack("dcgan-faces64")
    smile = pack.local_edit("smile")
    framing = pack.config["framing"]
    eyes = math.hypot(framing["eye_right"][0] - framing["eye_left"][0], framing["eye_right"][1] - framing["eye_left"][1])
    assert smile["center"] == tuple(framing["mouth"])
    assert smile["radii"][0] == pytest.approx(pack.config["local_edits"]["smile"]["width"] * eyes)
    assert pack.local_edit("age") is None and load_pack("utkface64").local_edit("smile") is None
    folder = tmp_path / "pack"
    shutil.copytree(bundled_pack_dir("dcgan-faces64"), folder)
    config = json.loads((folder / "config.json").read_text())
    good = dict(config["local_edits"]["smile"])
    for crafted, message in [({**good, "width": 5.0}, "width must be a number"), ({**good, "height": "1"}, "height"),
                             ({**good, "stiffness": 1e9}, "stiffness must be a number"),
                             ({**good, "around": "ear"}, "'around' must be one of"),
                             ({**good, "extra": 1}, "needs exactly"), ("smile", "needs exactly")]:
        config["local_edits"] = {"smile": crafted}
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(ConfigError, match=message):  # refused when the pack is loaded
            load_pack(folder)


def test_a_local_edit_can_be_centred_between_the_eyes(tmp_path):
    import shutil

    from idinvert.pack import bundled_pack_dir, load_pack

    folder = tmp_path / "pack"
    shutil.copytree(bundled_pack_dir("dcgan-faces64"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["local_edits"] = {"eyeglasses": {"around": "eyes", "width": 1.0, "height": 0.5, "stiffness": 0.1}}
    (folder / "config.json").write_text(json.dumps(config))
    glasses = load_pack(folder).local_edit("eyeglasses")
    (lx, ly), (rx, ry) = config["framing"]["eye_left"], config["framing"]["eye_right"]
    assert glasses["center"] == pytest.approx(((lx + rx) / 2, (ly + ry) / 2))
    assert glasses["radii"] == pytest.approx((math.hypot(rx - lx, ry - ly), 0.5 * math.hypot(rx - lx, ry - ly)))
    # the points are read by the pack's one framing reader: a crafted eye is a one-line error, not a Python one
    both = ({"eyeglasses": config["local_edits"]["eyeglasses"]},
            {"smile": {"around": "mouth", "width": 1.5, "height": 0.8, "stiffness": 0.1}})
    for crafted in (None, [0.3], [0.3, 0.4, 0.5], [True, 0.5], "ab"):
        for edits in both:
            config["framing"]["eye_left"], config["local_edits"] = crafted, edits
            (folder / "config.json").write_text(json.dumps(config))
            with pytest.raises(ConfigError, match=r"\[framing\]: framing eye_left must"):
                load_pack(folder)
