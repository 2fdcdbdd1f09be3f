"""`idinvert edit / interpolate / mix / diffuse` end to end on real photos, through the real entry point."""

from __future__ import annotations

import csv
import functools
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_data, tiny_networks
from idinvert.cli import main
from idinvert.pack import save_pack
from idinvert.perceptual import default_perceptual_config
from idinvert.safety import MARKER, mark_output_dir

L, C = 8, 32  # codes of the tiny 32 px pack



def _extract_test_images(tar_path: Path, table: Path, count: int, folder: Path) -> list[Path]:
    """The first ``count`` test-split photos of a shared data set (skipping UTKFace duplicates)."""
    with open(table, newline="", encoding="utf-8") as f:
        names = [row["file"] for row in csv.DictReader(f)
                 if row["split"] == "test" and row.get("duplicate_of_earlier", "0") != "1"][:count]
    paths = []
    with tarfile.open(tar_path) as tar:
        members = {m.name: m for m in tar.getmembers() if m.name in names}
        for name in names:
            path = folder / Path(name).name.replace(".jpg.chip.jpg", ".jpg")
            path.write_bytes(tar.extractfile(members[name]).read())
            paths.append(path)
    return paths


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, list[Path]]:
    """Two UTKFace (200×200) and two CelebA (178×218) test-split photos."""
    folder = tmp_path_factory.mktemp("photos")
    utk = _extract_test_images(shared_data("utkface", "images.tar"), shared_data("utkface", "labels.csv"), 2, folder)
    celeba = _extract_test_images(shared_data("celeba6k", "images.tar"), shared_data("celeba6k", "attributes.csv"),
                                  2, folder)
    return {"utk": utk, "celeba": celeba}


@pytest.fixture(scope="module")
def inverted(tiny_pack_dir, photos, tmp_path_factory) -> dict[str, Path]:
    """Invert folders: two UTKFace photos (A) and one CelebA photo (B), one optimisation step each."""
    root = tmp_path_factory.mktemp("inverted")
    dirs = {"A": root / "A", "B": root / "B"}
    for key, images in (("A", photos["utk"]), ("B", photos["celeba"][:1])):
        assert main(["invert", *map(str, images), "--model", str(tiny_pack_dir), "--out", str(dirs[key]),
                     "--steps", "1", "--quiet"]) == 0
    return dirs


@pytest.fixture(scope="module")
def boundaries(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("boundaries")
    rng = np.random.default_rng(0)
    files = {"official": root / "smile.npy", "plain": root / "plain.npy", "w512": root / "interfacegan_w.npy",
             "nan": root / "nan.npy", "unsafe": root / "unsafe.npy"}
    np.save(files["official"], {"boundary": rng.normal(size=(1, L, C)).astype(np.float32),
                                "meta_data": {"manipulate_layers": [0, 1, 2]}})
    np.save(files["plain"], rng.normal(size=(1, C)).astype(np.float32))
    np.save(files["w512"], rng.normal(size=(1, 512)).astype(np.float32))
    np.save(files["nan"], np.full((1, L, C), np.nan, np.float32))
    with open(files["unsafe"], "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(pickle.dumps(np.array(print, dtype=object)))
    return files


def codes_of(folder: Path) -> np.ndarray:
    return np.load(folder / "codes.npy")


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def assert_contact_sheet(folder: Path, *headers: str) -> None:
    page = (folder / "index.html").read_text()
    assert all(f"<th>{h}</th>" in page for h in headers), headers
    assert Image.open(folder / "sheet.png").size[0] > 100
    assert not [p for p in folder.parent.iterdir() if ".staging-" in p.name]


# --- every verb, end to end -------------------------------------------------------------------------

def test_edit_with_an_official_boundary(tiny_pack_dir, inverted, boundaries, tmp_path):
    out = tmp_path / "edit"
    assert main(["edit", str(inverted["A"]), "--boundary", str(boundaries["official"]),
                 "--model", str(tiny_pack_dir), "--out", str(out), "--quiet"]) == 0
    edited, wp = codes_of(out), codes_of(inverted["A"])
    assert edited.shape == (2, 7, L, C) and edited.dtype == np.float32
    assert np.array_equal(edited[:, 3], wp)  # d = 0
    assert np.array_equal(edited[:, :, 3:], np.broadcast_to(wp[:, None, 3:], edited[:, :, 3:].shape))
    manifest = manifest_of(out)
    assert manifest["boundary"]["layers"] == [0, 1, 2] and manifest["distances"] == [-3, -2, -1, 0, 1, 2, 3]
    name = manifest["names"][0]
    for suffix in ("ori", "inv", "step01", "step07"):
        assert Image.open(out / f"{name}_{suffix}.png").size == (32, 32)
    assert_contact_sheet(out, "Origin", "Inverted", "Step 01 (d=-3)", "Step 07 (d=3)")


def test_edit_plain_boundary_with_distances_and_layers(tiny_pack_dir, inverted, boundaries, tmp_path):
    out = tmp_path / "edit"
    assert main(["edit", str(inverted["B"]), "--boundary", str(boundaries["plain"]), "--distances", "-2,2",
                 "--steps", "3", "--layers", "4-7", "--model", str(tiny_pack_dir), "--out", str(out), "--quiet"]) == 0
    edited, wp = codes_of(out), codes_of(inverted["B"])
    b = np.load(boundaries["plain"])[0]
    assert edited.shape == (1, 3, L, C)
    assert np.array_equal(edited[0, :, :4], np.broadcast_to(wp[0, :4], (3, 4, C)))
    assert np.allclose(edited[0, 2, 4:] - wp[0, 4:], 2 * b, atol=1e-6)


@pytest.fixture(scope="module")
def pack_with_boundaries(tmp_path_factory, boundaries) -> Path:
    g, e = tiny_networks()
    folder = tmp_path_factory.mktemp("packs") / "with_boundaries"
    return save_pack(folder, name="faces", generator=g, encoder=e,
                     perceptual_config=default_perceptual_config("torchvision"),
                     extra_config={"boundaries": {"smile": "boundaries/smile.npy"}},
                     extra_files={"boundaries/smile.npy": boundaries["official"]})


def test_edit_attribute_shipped_in_the_pack(pack_with_boundaries, inverted, tmp_path, capsys):
    out = tmp_path / "edit"
    assert main(["edit", str(inverted["A"]), "--attribute", "smile", "--model", str(pack_with_boundaries),
                 "--out", str(out), "--quiet"]) == 0
    assert manifest_of(out)["boundary"]["attribute"] == "smile"
    assert codes_of(out).shape == (2, 7, L, C)
    assert main(["edit", str(inverted["A"]), "--attribute", "age", "--model", str(pack_with_boundaries),
                 "--out", str(tmp_path / "other"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no boundary 'age'" in err and "available: smile" in err and err.count("\n") == 1


def test_interpolate(tiny_pack_dir, inverted, tmp_path):
    out = tmp_path / "interp"
    assert main(["interpolate", str(inverted["A"]), str(inverted["B"]), "--steps", "3",
                 "--model", str(tiny_pack_dir), "--out", str(out), "--quiet"]) == 0
    codes, src, dst = codes_of(out), codes_of(inverted["A"]), codes_of(inverted["B"])
    assert codes.shape == (2, 1, 5, L, C)
    assert np.array_equal(codes[:, 0, 0], src) and np.array_equal(codes[:, 0, -1], np.repeat(dst, 2, axis=0))
    assert np.allclose(codes[:, 0, 2], (src + dst) / 2, atol=1e-6)
    a, b = manifest_of(out)["sources"][0], manifest_of(out)["targets"][0]
    for filename in (f"{a}_TO_{b}_01.png", f"{a}_TO_{b}_03.png", f"src_{a}_inv.png", f"dst_{b}_ori.png"):
        assert (out / filename).is_file()
    assert_contact_sheet(out, "Source", "Source Inversion", "Step 01", "Step 03", "Target Inversion", "Target")


def test_mix(tiny_pack_dir, inverted, tmp_path):
    out = tmp_path / "mix"
    assert main(["mix", str(inverted["A"]), str(inverted["B"]), "--layer-start", "4",
                 "--model", str(tiny_pack_dir), "--out", str(out), "--quiet"]) == 0
    codes, style, content = codes_of(out), codes_of(inverted["A"]), codes_of(inverted["B"])
    assert codes.shape == (2, 1, L, C)
    assert np.array_equal(codes[:, 0, :4], np.repeat(content[:, :4], 2, axis=0))
    assert np.array_equal(codes[:, 0, 4:], style[:, 4:])
    s, c = manifest_of(out)["styles"][1], manifest_of(out)["contents"][0]
    assert (out / f"{s}_STYLIZE_{c}.png").is_file() and (out / f"content_{c}_ori.png").is_file()
    assert_contact_sheet(out, "Style", "Content 000")
    default = tmp_path / "mix_default"
    assert main(["mix", str(inverted["A"]), str(inverted["B"]), "--model", str(tiny_pack_dir),
                 "--out", str(default), "--quiet"]) == 0
    assert manifest_of(default)["layer_start"] == 6  # 10 of 14, scaled to 8 layers


def test_diffuse(tiny_pack_dir, photos, tmp_path):
    out = tmp_path / "diffuse"
    assert main(["diffuse", "--target", str(photos["utk"][0]), "--context", *map(str, photos["celeba"]),
                 "--steps", "2", "--model", str(tiny_pack_dir), "--out", str(out), "--quiet"]) == 0
    manifest = manifest_of(out)
    assert codes_of(out).shape == (1, 2, L, C) and np.load(out / "encoder_codes.npy").shape == (1, 2, L, C)
    assert manifest["crop"] == {"top": 11, "left": 9, "size": 14, "rows": [11, 24], "cols": [9, 22]}
    assert manifest["settings"]["lambda_dom"] == 0 and "dom" not in manifest["losses"][0]
    t, c = manifest["targets"][0], manifest["contexts"][1]
    stitched = np.asarray(Image.open(out / f"{t}_TO_{c}_stitched.png"), dtype=np.int16)
    target = np.asarray(Image.open(out / f"target_{t}.png"), dtype=np.int16)
    context = np.asarray(Image.open(out / f"context_{c}.png"), dtype=np.int16)
    assert np.array_equal(stitched[11:25, 9:23], target[11:25, 9:23])
    assert np.array_equal(stitched[:11], context[:11]) and np.array_equal(stitched[:, 23:], context[:, 23:])
    assert (out / f"{t}_TO_{c}.png").is_file() and (out / f"{t}_TO_{c}_enc.png").is_file()
    assert_contact_sheet(out, "Target Image", "Context Image", "Stitched Image", "Encoder Output", "Step 002")


def test_images_instead_of_invert_folders(tiny_pack_dir, photos, tmp_path, monkeypatch):
    import idinvert.cli.common as invert_cli
    from idinvert.engine.inversion import InversionConfig

    # The default inversion has 100 steps; two are enough to check the plumbing.
    monkeypatch.setattr(invert_cli, "InversionConfig", functools.partial(InversionConfig, steps=2))
    out = tmp_path / "mix"
    assert main(["mix", str(photos["celeba"][1]), str(photos["utk"][1]), "--model", str(tiny_pack_dir),
                 "--out", str(out), "--quiet"]) == 0
    manifest = manifest_of(out)
    assert manifest["styles"] == [photos["celeba"][1].stem] and manifest["contents"] == [photos["utk"][1].stem]
    assert codes_of(out).shape == (1, 1, L, C)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The installed console script when on PATH (as users run it), else ``python -m idinvert``."""
    exe = shutil.which("idinvert")
    command = [exe] if exe else [sys.executable, "-m", "idinvert"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=300)


def test_console_script(tiny_pack_dir, inverted, boundaries, tmp_path):
    out = tmp_path / "interp"
    ok = run_cli("interpolate", str(inverted["B"]), str(inverted["A"]), "--model", str(tiny_pack_dir),
                 "--out", str(out))
    assert ok.returncode == 0, ok.stderr
    assert codes_of(out).shape == (1, 2, 7, L, C) and "index.html" in ok.stderr
    bad = run_cli("edit", str(inverted["A"]), "--boundary", str(boundaries["w512"]), "--model", str(tiny_pack_dir),
                  "--out", str(tmp_path / "edit"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert "interfacegan_w.npy" in bad.stderr and "[1, 512]" in bad.stderr and "[1, 8, 32]" in bad.stderr
    assert not (tmp_path / "edit").exists()


# --- bad input: one line naming the file and the fix, status 2, no output ---------------------------

@pytest.fixture(scope="module")
def broken(tmp_path_factory, photos) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken")
    (root / "empty").mkdir()
    (root / "text.png").write_text("this is not an image")
    data = photos["celeba"][0].read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "badpack").mkdir()
    (root / "badpack" / "config.json").write_text("{ not json")
    g, e = tiny_networks()
    with torch.no_grad():
        for name, p in g.synthesis.named_parameters():
            if name != "lod":
                p.fill_(float("nan"))  # a diverged training run
    save_pack(root / "nanpack", name="diverged", generator=g, encoder=e,
              perceptual_config=default_perceptual_config("torchvision"))
    (root / "file_not_folder").write_text("x")
    return {"root": root}


def _nan_invert_dir(inverted: Path, folder: Path) -> Path:
    shutil.copytree(inverted, folder)
    codes = np.load(folder / "codes.npy")
    codes[0, 0, 0] = np.nan
    np.save(folder / "codes.npy", codes)
    return folder


CASES = {  # name: (arguments after the verb, text the message must contain, file it must name)
    "not_an_image": ("edit {root}/text.png --boundary {official}", "not an image", "text.png"),
    "truncated_image": ("mix {root}/truncated.jpg {A}", "truncated", "truncated.jpg"),
    "empty_folder": ("interpolate {root}/empty {A}", "holds no images", "empty"),
    "missing_pack": ("mix {A} {B} --model {root}/nopack", "no such model pack", "nopack"),
    "malformed_pack": ("interpolate {A} {B} --model {root}/badpack", "not valid JSON", "config.json"),
    "wrong_boundary": ("edit {A} --boundary {w512}", "[1, 8, 32]", "interfacegan_w.npy"),
    "nan_boundary": ("edit {A} --boundary {nan}", "NaN", "nan.npy"),
    "unsafe_boundary": ("edit {A} --boundary {unsafe}", "refusing", "unsafe.npy"),
    "missing_boundary": ("edit {A} --boundary {root}/none.npy", "no such boundary file", "none.npy"),
    "no_boundaries_in_pack": ("edit {A} --attribute smile", "ships no boundaries", "tiny"),
    "bad_layers": ("edit {A} --boundary {plain} --layers 0-20", "layers 0-7", "--layers"),
    "nan_codes": ("edit {nan_codes} --boundary {plain}", "NaN", "codes.npy"),
    "nan_in_the_pack": ("diffuse --target {utk} --context {celeba} --steps 2 --model {root}/nanpack", "NaN",
                        "nanpack"),
    "nan_inverting_images": ("edit {utk} --boundary {plain} --model {root}/nanpack", "NaN", "nanpack"),
    "huge_lambda_vgg": ("diffuse --target {utk} --context {celeba} --steps 2 --lambda-vgg 1e39", "finite number",
                        "--lambda-vgg"),
    "huge_lr": ("diffuse --target {utk} --context {celeba} --lr 1e38", "--lr 1e+38", "learning rate"),
    "crop_outside": ("diffuse --target {utk} --context {celeba} --crop-size 40", "does not fit", "--crop-size"),
    "out_is_a_file": ("mix {A} {B} --out {root}/file_not_folder", "not a folder", "file_not_folder"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tiny_pack_dir, inverted, boundaries, photos, broken, tmp_path, capsys):
    arguments, expected, named = CASES[case]
    root = broken["root"]
    values = {"root": root, "A": inverted["A"], "B": inverted["B"], "utk": photos["utk"][0],
              "celeba": photos["celeba"][0], **{k: v for k, v in boundaries.items()}}
    if "{nan_codes}" in arguments:
        values["nan_codes"] = _nan_invert_dir(inverted["A"], tmp_path / "nan_codes")
    args = arguments.format(**values).split()
    out = tmp_path / "out"
    out.mkdir()
    mark_output_dir(out)  # an earlier run's folder: the failed run must leave it as it was
    (out / "keep.txt").write_text("mine")
    if "--model" not in args:
        args += ["--model", str(tiny_pack_dir)]
    if "--out" not in args:
        args += ["--out", str(out)]
    status = main([*args, "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("idinvert: error: ") and err.count("\n") == 1, err
    assert expected in err and named in err, err
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "keep.txt"]
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]
