"""`idinvert invert` through its real entry point (the console script's main)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from idinvert.cli import main
from idinvert.safety import MARKER, mark_output_dir


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("b_face", (40, 50)), ("a_face", (32, 32))):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def test_invert_writes_the_contract(tiny_pack_dir, photos, tmp_path):
    out = tmp_path / "out"
    code = main(["invert", str(photos / "b_face.png"), str(photos / "a_face.png"), "--model", str(tiny_pack_dir),
                 "--out", str(out), "--steps", "3", "--batch-size", "1", "--quiet"])
    assert code == 0
    codes = np.load(out / "codes.npy")
    assert codes.dtype == np.float32 and codes.shape == (2, 8, 32)
    assert np.load(out / "encoder_codes.npy").shape == (2, 8, 32)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["names"] == ["b_face", "a_face"]  # input order
    assert manifest["settings"]["steps"] == 3 and manifest["settings"]["method"] == "in-domain"
    assert len(manifest["losses"]) == 2 and "total" in manifest["losses"][0]
    assert manifest["model"]["name"] == "tiny"
    for name in ("b_face", "a_face"):
        for kind in ("ori", "enc", "inv"):
            assert Image.open(out / f"{name}_{kind}.png").size == (32, 32)
    assert (out / "sheet.png").is_file()
    assert "a_face_inv.png" in (out / "index.html").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_folder_input_and_methods(tiny_pack_dir, photos, tmp_path):
    out = tmp_path / "enc"
    assert main(["invert", str(photos), "--model", str(tiny_pack_dir), "--out", str(out), "--method", "encoder",
                 "--quiet"]) == 0
    assert json.loads((out / "manifest.json").read_text())["names"] == ["a_face", "b_face"]
    assert np.array_equal(np.load(out / "codes.npy"), np.load(out / "encoder_codes.npy"))


def run_cli(*args):
    """The installed console script when on PATH (as users run it), else ``python -m idinvert``."""
    exe = shutil.which("idinvert")
    command = [exe] if exe else [sys.executable, "-m", "idinvert"]
    return subprocess.run([*command, *args], capture_output=True, text=True)


def test_bad_image_is_one_line_and_leaves_no_output(tiny_pack_dir, photos, tmp_path):
    (photos / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    result = run_cli("invert", str(photos / "broken.png"), "--model", str(tiny_pack_dir), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "broken.png" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_failed_run_leaves_existing_output_unchanged(tiny_pack_dir, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mark_output_dir(out)  # an earlier run's folder
    (out / "keep.txt").write_text("mine")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    code = main(["invert", str(photos), "--model", str(tiny_pack_dir), "--out", str(out), "--quiet"])
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "keep.txt"]


@pytest.mark.parametrize("problem", ["out_is_file", "no_pack", "empty_folder", "conventional"])
def test_user_errors(tiny_pack_dir, photos, tmp_path, problem, capsys):
    args = ["invert", str(photos), "--model", str(tiny_pack_dir), "--out", str(tmp_path / "o"), "--quiet"]
    expected = {"out_is_file": "not a folder", "no_pack": "no such model pack", "empty_folder": "holds no images",
                "conventional": "no conventional encoder"}[problem]
    if problem == "out_is_file":
        (tmp_path / "o").write_text("x")
    elif problem == "no_pack":
        args[3] = str(tmp_path / "nopack")
    elif problem == "empty_folder":
        (tmp_path / "empty").mkdir()
        args[1] = str(tmp_path / "empty")
    else:
        args += ["--method", "conventional"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_without_model_and_no_bundled_pack_says_so(photos, tmp_path, monkeypatch, capsys):
    import idinvert.pack as pack_module

    monkeypatch.setattr(pack_module, "bundled_pack_dir", lambda name="default": tmp_path / "none")
    assert main(["invert", str(photos), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "bundled" in capsys.readouterr().err
