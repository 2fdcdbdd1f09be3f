"""``idinvert edit --by/--to``: edits in the attribute's units, found per image with the pack's predictor,
and the library pieces they use (``attributes.amounts``). The tiny pack's predictor reads brightness
(tests/units_pack.py), so every reading rises monotonically along its boundaries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from idinvert.attributes import load_predictor
from idinvert.attributes.amounts import (Amount, attribute_reader, boundary_step, check_amount, code_renderer,
                                         format_value, plain_name, solve_distances)
from idinvert.boundaries import load_boundary
from idinvert.cli import main
from idinvert.engine.tuned import synthesize_tuned
from idinvert.errors import ConfigError
from idinvert.pack import load_pack
from units_pack import brightness_predictor


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name, level in (("dark", 70), ("light", 150)):
        Image.fromarray(np.clip(rng.normal(level, 30, (32, 32, 3)), 0, 255).astype(np.uint8)).save(
            folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def inverted(units_pack_dir, plain_pack_dir, photos, tmp_path_factory):
    """Invert folders of the two photos (2 steps) for both packs: the edits need not invert 100 steps."""
    folders = {}
    for pack in (units_pack_dir, plain_pack_dir):
        folders[pack] = tmp_path_factory.mktemp("inv") / "inv"
        assert main(["invert", str(photos / "dark.png"), str(photos / "light.png"), "--model", str(pack),
                     "--out", str(folders[pack]), "--steps", "2", "--quiet"]) == 0
    return folders


def edit(pack, inverted, out, *options) -> int:
    return main(["edit", str(inverted[pack]), "--model", str(pack), "--out", str(out), "--quiet", *options])


# --- the library ------------------------------------------------------------------------------------------

def test_the_brightness_predictor_reads_what_it_says():
    p = brightness_predictor()
    images = torch.full((2, 3, 32, 32), 0.5)
    images[1] = -0.5
    assert torch.allclose(attribute_reader(p, "age")(images), torch.tensor([75.0, 25.0]), atol=0.1)
    assert torch.allclose(attribute_reader(p, "smile")(images), torch.sigmoid(torch.tensor([2.0, -2.0])), atol=1e-3)
    assert torch.allclose(attribute_reader(p, "eyeglasses")(images), torch.sigmoid(torch.tensor([-2.0, 2.0])),
                          atol=1e-3)


def test_flip_reaches_the_other_side_per_image_and_directions_may_differ_per_image():
    render = lambda codes, rows: codes[:, 0, :1]  # noqa: E731  "images" = the code's first entry
    read = lambda images: torch.sigmoid(images[:, 0])  # noqa: E731
    codes = torch.zeros(2, 1, 4)
    codes[0, 0, 0], codes[1, 0, 0] = -1.0, 1.0  # P 0.27 and 0.73
    directions = torch.zeros(2, 1, 4)
    directions[:, 0, 0] = torch.tensor([1.0, 2.0])  # the second image moves twice as fast
    solved = solve_distances(read, render, codes, directions, Amount(flip=0.9), attribute="smile")
    assert torch.allclose(solved.target, torch.tensor([0.9, 0.1]))
    assert torch.allclose(solved.reached, solved.target, atol=0.01) and solved.reachable.all()
    assert solved.distances[0] > 0 > solved.distances[1]
    assert abs(float(solved.distances[0]) - (np.log(9) + 1)) < 0.05
    assert abs(float(solved.distances[1]) + (np.log(9) + 1) / 2) < 0.05
    with pytest.raises(ConfigError, match="no other side"):
        solve_distances(lambda x: x[:, 0] * 10, render, codes, directions, Amount(flip=0.9), attribute="age")
    with pytest.raises(ConfigError, match="between 0.5 and 1"):
        Amount(flip=0.3)


def test_units_rules_names_and_labels():
    check_amount(Amount(by=15), "age")
    check_amount(Amount(to=0.9), "smile")
    for amount, attribute, message in ((Amount(by=0.2), "smile", "only age is measured in years"),
                                       (Amount(to=0.9), "age", "use --by YEARS"),
                                       (Amount(to=1.0), "smile", "between 0 and 1"),
                                       (Amount(to=0.0), "smile", "between 0 and 1"),
                                       (Amount(by=500), "age", "more than age can change")):
        with pytest.raises(ConfigError, match=message):
            check_amount(amount, attribute)
    assert [plain_name(n) for n in ("blond_hair", "Blond_Hair", "eyeglasses", "mouth_open", "direction 1")] == \
        ["Blond hair", "Blond hair", "Glasses", "Mouth open", "Direction 1"]
    assert format_value(46.6, "years") == "47 y" and format_value(0.884, "probability") == "88 %"


def test_the_step_is_manipulates_edit_and_tuned_images_are_what_is_read(units_pack_dir):
    from idinvert.engine.editing import manipulate
    from idinvert.engine.tuned import TunedWeights

    pack = load_pack(units_pack_dir)
    boundary = load_boundary(pack.boundary_file("age"), pack.code_shape)
    codes = pack.generator.mean_code()[None].repeat(2, 1, 1)
    step = boundary_step(boundary, pack.code_shape, layers=[6, 7])
    assert torch.equal(codes + 2.0 * step, manipulate(codes, boundary, distances=[2.0], layers=[6, 7])[:, 0])
    assert step[:6].abs().sum() == 0
    tuned = TunedWeights.zeros(pack.generator, 2)
    name = next(iter(tuned.deltas))
    tuned.deltas[name][1].normal_(0, 0.5)  # image 1's generator differs
    render = code_renderer(pack.generator, tuned)
    images = render(codes[[1]], torch.tensor([1]))
    assert torch.allclose(images, synthesize_tuned(pack.generator, tuned.select([1]), codes[[1], None])[:, 0])
    assert not torch.allclose(images, code_renderer(pack.generator)(codes[[1]], torch.tensor([1])))


# --- the command line -------------------------------------------------------------------------------------

def test_edit_by_years_writes_one_edit_per_image_and_its_rows(units_pack_dir, inverted, tmp_path, capsys):
    out = tmp_path / "older"
    assert edit(units_pack_dir, inverted, out, "--attribute", "age", "--by", "+15", "--steps", "2") == 2
    assert "leave out --steps" in capsys.readouterr().err
    assert edit(units_pack_dir, inverted, out, "--attribute", "age", "--by", "+15") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    amount = manifest["amount"]
    assert amount["attribute"] == "age" and amount["unit"] == "years" and amount["by"] == 15.0
    assert amount["max_distance"] == 6.0 and amount["reached_all"] is True
    rows = amount["per_image"]
    assert [r["name"] for r in rows] == manifest["names"] == ["dark", "light"]
    for row, d in zip(rows, manifest["distances"]):
        assert set(row) >= {"distance", "start", "target", "reached", "reachable"} and "note" not in row
        assert row["target"] == pytest.approx(row["start"] + 15, abs=1e-3)
        assert abs(row["reached"] - row["target"]) <= 0.5 and row["distance"] == pytest.approx(d, abs=1e-4)
        assert row["distance"] > 0
    assert manifest["code_shape"] == [2, 1, 8, 32] and np.load(out / "codes.npy").shape == (2, 1, 8, 32)
    assert (out / "dark_step01.png").is_file() and not (out / "dark_step02.png").exists()
    # the image written is the one the predictor read: its age is the reached value
    predictor = load_predictor(load_pack(units_pack_dir))
    written = torch.from_numpy(np.asarray(Image.open(out / "dark_step01.png"), dtype=np.float32)).permute(2, 0, 1)
    age = float(attribute_reader(predictor, "age")(written[None] / 127.5 - 1))
    assert abs(age - rows[0]["reached"]) < 1.0
    page = (out / "index.html").read_text()
    assert "age by +15 years" in page and "dark: " in page and " y to " in page


def test_edit_to_a_probability_and_an_unreachable_target_is_a_note(units_pack_dir, inverted, tmp_path, capsys):
    out = tmp_path / "smile"
    assert edit(units_pack_dir, inverted, out, "--attribute", "smile", "--to", "0.9") == 0
    rows = json.loads((out / "manifest.json").read_text())["amount"]["per_image"]
    assert all(abs(r["reached"] - 0.9) <= 0.01 and r["reachable"] for r in rows)
    capsys.readouterr()
    far = tmp_path / "far"  # 0.999 needs brightness 1.7: beyond what the images reach, and beyond |d| ≤ 0.5
    assert edit(units_pack_dir, inverted, far, "--attribute", "smile", "--to", "0.999", "--max-distance", "0.5") == 0
    err = capsys.readouterr().err
    manifest = json.loads((far / "manifest.json").read_text())
    rows = manifest["amount"]["per_image"]
    assert manifest["amount"]["reached_all"] is False and manifest["amount"]["max_distance"] == 0.5
    for row in rows:
        assert row["reachable"] is False and "not reached within |d| = 0.5" in row["note"]
        assert abs(row["distance"]) <= 0.5 and row["reached"] < 0.999  # the closest it got, not a clamp
    assert err.count("idinvert edit: note: ") == 2 and "dark" in err and "light" in err


@pytest.mark.parametrize("options, message", [
    (["--attribute", "smile", "--by", "10"], "only age is measured in years"),
    (["--attribute", "age", "--to", "0.5"], "use --by YEARS"),
    (["--attribute", "smile", "--to", "1.5"], "between 0 and 1"),
    (["--attribute", "smile", "--to", "0"], "between 0 and 1"),
    (["--attribute", "age", "--by", "nan"], "finite number"),
    (["--attribute", "age", "--by", "inf"], "finite number"),
    (["--attribute", "age", "--by", "5", "--to", "0.5"], "not both"),
    (["--attribute", "age", "--by", "5", "--distances", "-1,1"], "leave out --distances"),
    (["--attribute", "age", "--max-distance", "3"], "bounds the search of --by/--to"),
    (["--attribute", "age", "--by", "5", "--max-distance", "0"], "positive number"),
    (["--attribute", "age", "--by", "5", "--max-distance", "nan"], "positive number"),
    (["--attribute", "pose", "--to", "0.9"], "no 'pose' to measure"),
])
def test_bad_amounts_are_one_line_errors_before_any_work(units_pack_dir, inverted, tmp_path, capsys, options, message):
    out = tmp_path / "out"
    assert edit(units_pack_dir, inverted, out, *options) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_a_boundary_file_or_a_pack_without_predictor_cannot_measure(units_pack_dir, plain_pack_dir, inverted,
                                                                     tmp_path, capsys):
    pack = load_pack(units_pack_dir)
    assert edit(units_pack_dir, inverted, tmp_path / "a", "--boundary", str(pack.boundary_file("age")),
                "--by", "5") == 2
    assert "needs --attribute NAME" in capsys.readouterr().err
    assert edit(plain_pack_dir, inverted, tmp_path / "b", "--attribute", "age", "--by", "5") == 2
    err = capsys.readouterr().err
    assert "has none" in err and "--distances" in err and err.count("\n") == 1
    # distances stay as they were: the default seven, the same manifest
    assert edit(plain_pack_dir, inverted, tmp_path / "c", "--attribute", "age") == 0
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["distances"] == [-3, -2, -1, 0, 1, 2, 3] and "amount" not in manifest


@pytest.mark.slow  # tunes two generators (3 s)
def test_on_tuned_results_the_tuned_generator_is_measured(units_pack_dir, photos, tmp_path):
    inv = tmp_path / "inv"
    assert main(["invert", str(photos / "dark.png"), str(photos / "light.png"), "--model", str(units_pack_dir),
                 "--out", str(inv), "--steps", "2", "--refine", "pti", "--refine-steps", "4", "--quiet"]) == 0
    out = tmp_path / "edit"
    assert main(["edit", str(inv), "--attribute", "age", "--by", "-10", "--model", str(units_pack_dir),
                 "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tuned_generators"] is True
    predictor = load_predictor(load_pack(units_pack_dir))
    for i, row in enumerate(manifest["amount"]["per_image"]):
        # the start is the tuned reconstruction's age (what the user gets), not the untuned one's
        pti = np.asarray(Image.open(inv / f"{row['name']}_pti.png"), dtype=np.float32)
        tuned_age = float(attribute_reader(predictor, "age")(torch.from_numpy(pti).permute(2, 0, 1)[None] / 127.5 - 1))
        assert abs(tuned_age - row["start"]) < 1.0
        assert abs(row["reached"] - (row["start"] - 10)) <= 0.5


@pytest.fixture(scope="module")
def local_pack_dir(units_pack_dir, tmp_path_factory):
    """The units pack with a framing and a local smile (the part of the face around the mouth)."""
    import shutil

    from idinvert.pack import update_pack

    folder = tmp_path_factory.mktemp("local") / "pack"
    shutil.copytree(units_pack_dir, folder)
    framing = {"name": "test", "rule": "similarity", "size": 32, "eye_left": [0.3, 0.35], "eye_right": [0.7, 0.35],
               "mouth": [0.5, 0.7], "nose": [0.5, 0.55]}
    update_pack(folder, config_updates={"framing": framing, "local_edits": {
        "smile": {"around": "mouth", "width": 1.0, "height": 0.6, "stiffness": 0.01}}})
    return folder


def test_a_local_smile_reaches_its_amount_and_whole_face_moves_along_the_boundary(local_pack_dir, photos, tmp_path,
                                                                                  capsys):
    inv = tmp_path / "inv"
    assert main(["invert", str(photos / "dark.png"), str(photos / "light.png"), "--model", str(local_pack_dir),
                 "--out", str(inv), "--steps", "2", "--quiet"]) == 0
    runs = {}
    for name, extra in (("local", []), ("whole", ["--whole-face"])):
        out = tmp_path / name
        assert main(["edit", str(inv), "--model", str(local_pack_dir), "--out", str(out), "--quiet",
                     "--attribute", "smile", "--to", "0.8", *extra]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["amount"]["local"] is (name == "local")
        assert all(abs(r["reached"] - 0.8) <= 0.01 for r in manifest["amount"]["per_image"])
        runs[name] = np.load(out / "codes.npy")[:, 0]  # [N, L, C]
    pack = load_pack(local_pack_dir)
    step = boundary_step(load_boundary(pack.boundary_file("smile"), pack.code_shape), pack.code_shape).numpy()
    start = np.load(inv / "codes.npy")  # [N, L, C]
    moved_whole = runs["whole"] - start
    moved_local = runs["local"] - start
    # along the boundary itself: every face moved by a multiple of the boundary's step; locally: not
    for i in range(2):
        assert abs(np.dot(moved_whole[i].ravel(), step.ravel()) / np.linalg.norm(moved_whole[i])) > 0.999
        assert abs(np.dot(moved_local[i].ravel(), step.ravel()) / np.linalg.norm(moved_local[i])) < 0.99
    # the local edit changes the pixels around the mouth more, relative to the rest, than the boundary's
    from idinvert.engine.editing import outside_ellipse
    from idinvert.engine.tuned import synthesize

    settings = pack.local_edit("smile")
    keep = outside_ellipse(32, settings["center"], settings["radii"])
    base = synthesize(pack.generator, torch.from_numpy(start))
    share_outside = {}  # of the change in the image, the part away from the mouth
    for k, v in runs.items():
        change = (synthesize(pack.generator, torch.from_numpy(v)) - base).abs().mean(1)
        share_outside[k] = float((change * keep).sum() / change.sum())
    assert share_outside["local"] < share_outside["whole"], share_outside
    capsys.readouterr()
    assert main(["edit", str(inv), "--model", str(local_pack_dir), "--out", str(tmp_path / "x"), "--quiet",
                 "--attribute", "smile", "--whole-face"]) == 2
    err = capsys.readouterr().err
    assert "--whole-face chooses how --by/--to move" in err and err.count("\n") == 1
