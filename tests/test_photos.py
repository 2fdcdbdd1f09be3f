"""Ordinary photos in, full photos out: `edit --align` and `demo` on the astronaut portrait."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from idinvert.cli import main
from idinvert.boundaries import save_boundary
from idinvert.pack import update_pack

from conftest import needs_alignment


@pytest.fixture(scope="module")
def pack_with_boundary(tmp_path_factory, tiny_pack_dir):
    root = tmp_path_factory.mktemp("photos")
    pack = root / "pack"
    shutil.copytree(tiny_pack_dir, pack)
    b = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(0))
    b = b / b.norm(dim=2, keepdim=True)
    save_boundary(root / "smile.npy", b, layers=[0, 1, 2, 3])
    update_pack(pack, files={"boundaries/smile.npy": root / "smile.npy"},
                config_updates={"boundaries": {"smile": "boundaries/smile.npy"}})
    return pack


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    needs_alignment()
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(path, quality=95)
    return path


def test_edit_align_pastes_edits_into_the_full_photo(pack_with_boundary, astronaut, tmp_path):
    out = tmp_path / "out"
    assert main(["edit", str(astronaut), "--align", "--attribute", "smile", "--steps", "3", "--model",
                 str(pack_with_boundary), "--out", str(out), "--quiet"]) == 0
    original = np.asarray(Image.open(astronaut).convert("RGB"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["names"] == ["astronaut_face0"]
    for k in (1, 2, 3):
        full = np.asarray(Image.open(out / f"astronaut_step{k:02d}_photo.png"))
        assert full.shape == original.shape  # the photo at its own size
        changed = np.any(full != original, axis=2)
        assert changed.any()
        ys, xs = np.nonzero(changed)  # only around the face (the astronaut's face is top-centre)
        assert xs.min() > 100 and xs.max() < 400 and ys.max() < 330
        assert not changed[400:].any() and not changed[:, :80].any()
    assert (out / "astronaut_face0_step01.png").is_file() and (out / "astronaut_inv_photo.png").is_file()


def test_align_without_a_face_is_one_line(pack_with_boundary, tmp_path, capsys):
    needs_alignment()
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / "wall.png")
    assert main(["edit", str(tmp_path / "wall.png"), "--align", "--attribute", "smile", "--model",
                 str(pack_with_boundary), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "wall.png" in err and "no face" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_demo_writes_the_page(pack_with_boundary, astronaut, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--model", str(pack_with_boundary), "--steps", "3"]) == 0
    out = tmp_path / "idinvert-demo"
    assert "idinvert-demo" in capsys.readouterr().out
    for name in ("index.html", "sheet.png", "photo.png", "inversion_photo.png", "smile_+3_photo.png",
                 "smile_-1.5_face.png", "interpolation_3_face.png", "manifest.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["attributes"] == ["smile"] and manifest["steps"] == 3
    assert manifest["sweep"] == "smile from -3 to +3"
    with Image.open(out / "sweep.gif") as gif:
        assert gif.n_frames == 24 and gif.size == (256, 256)
    # every table labels its rows and its own columns: the edit row sits under d headers, the
    # inversion row under its own
    page = (out / "index.html").read_text()
    assert page.count("<table>") == 4 and '<th scope="row">smile</th>' in page
    inversion_table, edit_table = page.split("<table>")[1:3]
    assert "<th>aligned face</th>" in inversion_table and "d = " not in inversion_table
    assert "<th>d = -3</th>" in edit_table and "<th>d = 0 (reconstruction)</th>" in edit_table
    photo = np.asarray(Image.open(out / "photo.png"))
    edited = np.asarray(Image.open(out / "smile_+3_photo.png"))
    assert photo.shape == edited.shape and np.any(photo != edited)
