"""``idinvert demo``: pivotal tuning by default (``--no-refine`` to skip it), the photo beside the in-domain
and the tuned reconstruction, edits in the attribute's units with their labels, and the timing breakdown.
A tiny pack whose predictor reads brightness (tests/units_pack.py) stands in for the bundled one."""

from __future__ import annotations

import html
import json

import pytest

from idinvert.cli import main
from conftest import needs_alignment

# every test but the last runs the whole demo: dlib alignment, inversion, tuning (3-8 s each)
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def astronaut_ready():
    needs_alignment()


def demo(pack, out, *options) -> dict:
    assert main(["demo", "--model", str(pack), "--out", str(out), "--steps", "2", *options]) == 0
    return json.loads((out / "manifest.json").read_text())


@slow
def test_the_demo_tunes_by_default_and_edits_in_units(astronaut_ready, units_pack_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    manifest = demo(units_pack_dir, out, "--refine-steps", "3")
    stdout = capsys.readouterr().out
    refine = manifest["refine"]
    assert refine["method"] == "pti" and refine["steps_max"] == 3 and refine["per_image"][0]["steps"] <= 3
    assert (out / "face0_pti.png").is_file() and (out / "face0_inv.png").is_file()
    page = html.unescape((out / "index.html").read_text())
    intro = page.split("<table>")[1]
    for header in ("photo", "aligned face", "in-domain reconstruction", "tuned reconstruction (PTI)", "pasted back"):
        assert f"<th>{header}</th>" in intro
    assert "LPIPS to the face" in intro
    # edits: one row per edit, labelled in units, measured on the tuned generator's images
    edits = {e["key"]: e for e in manifest["edits"]}
    assert list(edits) == ["age_minus15y", "age_plus15y", "gender_other", "smile_off", "smile_on",
                           "eyeglasses_on", "pose_d-3", "pose_d+3"]
    for key, e in edits.items():
        assert (out / f"{key}_face.png").is_file() and (out / f"{key}_photo.png").is_file()
        assert e["label"] in page
    plus = edits["age_plus15y"]
    row = plus["per_image"][0]
    assert plus["amount"] == {"by": 15.0} and row["target"] == pytest.approx(row["start"] + 15, abs=1e-3)
    assert plus["label"].startswith("Age +15 y (reached ")
    assert edits["smile_on"]["label"].startswith("Smile on (reached ") and "%" in edits["smile_on"]["label"]
    assert edits["smile_off"]["amount"] == {"to": 0.1} and edits["eyeglasses_on"]["amount"] == {"to": 0.9}
    assert edits["gender_other"]["label"].startswith("Other gender (")
    assert edits["pose_d+3"]["distance"] == 3.0 and "raw distance" in edits["pose_d+3"]["label"]
    assert "Edits in the attribute's own units" in page and "on the tuned generator's images" in page
    assert manifest["sweep"].startswith("age from -15 to +15 years") and (out / "sweep.gif").is_file()
    # the timing breakdown, in the manifest and on stdout
    timing = manifest["timing"]
    assert set(timing) == {"align", "encoder", "inversion", "tuning", "edits", "writing", "total"}
    assert timing["tuning"] > 0 and timing["writing"] > 0 and manifest["seconds"] == timing["total"]
    assert sum(v for k, v in timing.items() if k != "total") <= timing["total"] + 0.05
    assert "time: align" in stdout and "tuning" in stdout and "writing" in stdout
    assert (out / "sheet.png").is_file()


@slow
def test_no_refine_shows_and_edits_the_in_domain_reconstruction(astronaut_ready, units_pack_dir, tmp_path):
    out = tmp_path / "demo"
    manifest = demo(units_pack_dir, out, "--no-refine", "--quiet")
    assert manifest["refine"] is None and manifest["timing"]["tuning"] == 0
    assert not (out / "face0_pti.png").exists()
    page = html.unescape((out / "index.html").read_text())
    assert "tuned reconstruction" not in page and "on the tuned generator's images" not in page
    assert "<th>in-domain reconstruction</th>" in page
    assert any(e["key"] == "age_plus15y" for e in manifest["edits"])


@slow
def test_a_pack_without_predictor_gets_labelled_raw_distances(astronaut_ready, plain_pack_dir, tmp_path):
    out = tmp_path / "demo"
    manifest = demo(plain_pack_dir, out, "--refine-steps", "2", "--quiet")
    page = (out / "index.html").read_text()
    assert "raw distances d" in page and "no attribute predictor" in page
    assert "<th>d = -3</th>" in page and "<th>d = 0 (reconstruction)</th>" in page
    assert all("amount" not in e and "raw distance" in e["label"] for e in manifest["edits"])
    assert (out / "age_+3_photo.png").is_file() and (out / "smile_-1.5_face.png").is_file()
    assert manifest["sweep"] == "age from -3 to +3"


def test_bad_refine_steps_is_one_line(units_pack_dir, tmp_path, capsys):
    assert main(["demo", "--model", str(units_pack_dir), "--out", str(tmp_path / "d"), "--refine-steps", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--refine-steps" in err and err.count("\n") == 1
