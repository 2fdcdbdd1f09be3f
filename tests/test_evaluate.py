"""`idinvert evaluate` end to end on the tiny pack, and the evaluation's pieces against references."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from idinvert.attributes import predictor_entry, save_predictor
from idinvert.attributes.predictor import AttributePredictor, PredictorConfig
from idinvert.cli import main
from idinvert.networks.config import EncoderConfig, to_dict
from idinvert.engine.directions import sefa
from idinvert.boundaries import Boundary, save_boundary
from idinvert.evaluation import (EvaluationConfig, MemoryCache, RealReference, average_precision, binarize,
                                 boundary_projection, edit_quality, evaluate, labels_from_rows, midpoints,
                                 monotone_fraction, precision_recall_curve, random_pairs, spearman)
from idinvert.evaluation.plots import bar_chart, line_chart, nice_ticks
from idinvert.metrics import (FrechetInceptionDistance, KernelInceptionDistance, SlicedWassersteinDistance,
                              swd_from_images)
from idinvert.networks import DomainGuidedEncoder
from idinvert.pack import load_pack, update_pack
from idinvert.datasets import prepare_dataset

HAS_DLIB = all(importlib.util.find_spec(m) is not None for m in ("dlib", "face_recognition_models"))



# --- pieces against references ------------------------------------------------------------------------

def test_average_precision_and_curve_match_scikit_learn():
    from sklearn.metrics import average_precision_score
    from sklearn.metrics import precision_recall_curve as sk_curve

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(2, 60))
        labels = rng.integers(0, 2, n)
        if labels.sum() == 0:
            labels[0] = 1
        scores = np.round(rng.normal(size=n) + labels, 1 if trial % 2 else 3)  # ties on odd trials
        ours = precision_recall_curve(torch.tensor(scores), torch.tensor(labels))
        assert ours.average_precision == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
        precision, recall, thresholds = sk_curve(labels, scores)
        assert np.allclose(ours.precision, precision) and np.allclose(ours.recall, recall)
        assert np.allclose(ours.thresholds, thresholds)
        # tied scores form one threshold: the order of tied samples does not matter
        perm = rng.permutation(n)
        assert average_precision(torch.tensor(scores[perm]), torch.tensor(labels[perm])) == \
            pytest.approx(ours.average_precision, abs=1e-12)
    assert np.isnan(average_precision(torch.tensor([0.1, 0.2]), torch.tensor([0, 0])))
    with pytest.raises(ValueError):
        average_precision(torch.tensor([0.1, 0.2]), torch.tensor([0, 2]))


def test_spearman_matches_scipy_and_monotone_fraction():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    x = np.array([-3.0, -2, -1, 0, 1, 2, 3])
    y = np.round(rng.normal(size=(6, 7)), 0)  # many ties
    ours = spearman(torch.tensor(x), torch.tensor(y)).numpy()
    for i in range(6):
        assert ours[i] == pytest.approx(spearmanr(x, y[i]).statistic, abs=1e-12)
    assert torch.isnan(spearman(torch.tensor(x), torch.ones(1, 7))[0])  # constant scores: undefined
    scores = torch.tensor([[0.0, 1, 2, 3], [0, 1, 1, 3], [0, 2, 1, 3], [3, 2, 1, 0]])
    assert monotone_fraction(scores) == 0.5  # rows 0 and 1 (a flat step is allowed)
    assert monotone_fraction(scores, direction=-1.0) == 0.25
    assert monotone_fraction(scores, tolerance=0.5) == 0.5 and monotone_fraction(scores, tolerance=1.0) == 1.0


def test_pairs_midpoints_and_projection():
    g = torch.Generator().manual_seed(0)
    pairs = random_pairs(5, 200, generator=g)
    assert pairs.shape == (200, 2) and (pairs[:, 0] != pairs[:, 1]).all() and pairs.min() >= 0 and pairs.max() < 5
    assert torch.equal(pairs, random_pairs(5, 200, generator=torch.Generator().manual_seed(0)))  # seeded
    assert len({tuple(p) for p in pairs.tolist()}) == 20  # every ordered pair of 5 appears
    codes = torch.randn(5, 4, 6)
    mid = midpoints(codes, pairs[:7])
    assert torch.allclose(mid, (codes[pairs[:7, 0]] + codes[pairs[:7, 1]]) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        random_pairs(1, 3)
    rows = torch.nn.functional.normalize(torch.randn(4, 6), dim=1)
    b = Boundary(rows, layers=(1, 3))
    expected = sum((codes[:, l] * rows[l]).sum(dim=1) for l in (1, 3))
    assert torch.allclose(boundary_projection(codes, b), expected, atol=1e-5)
    shared = Boundary(rows[:1])  # one direction for every layer, all layers
    assert torch.allclose(boundary_projection(codes, shared), (codes * rows[0]).sum(dim=(1, 2)), atol=1e-5)


def test_labels_from_rows_and_binarize():
    rows = [{"gender": "1", "age": "30", "Smiling": "1"}, {"gender": "0", "age": "70", "Smiling": "-1"},
            {"Male": "1", "age": "", "Smiling": ""}, {}]
    labels = labels_from_rows(rows, ["Male", "Smiling", "age", "Eyeglasses"])
    assert "Eyeglasses" not in labels  # no row has it
    assert labels["Male"][:3].tolist() == [0.0, 1.0, 1.0] and torch.isnan(labels["Male"][3])  # Male = 1 − gender
    assert labels["Smiling"][:2].tolist() == [1.0, 0.0]  # CelebA's −1 is "no"
    age, threshold = binarize("age", labels["age"])
    assert threshold == 30.0 and age[:2].tolist() == [1.0, 1.0] and torch.isnan(age[2])


def test_real_reference_equals_the_metric_classes():
    torch.manual_seed(0)
    real, fake = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(6, 3, 32, 32) * 2 - 1
    flat = lambda x: torch.nn.functional.avg_pool2d(x, 8).flatten(1)  # noqa: E731 — 48-d stand-in features
    ref = RealReference(real, seed=3, feature_extractor=flat)
    result = ref.compare([fake[:4], fake[4:]])
    fid = FrechetInceptionDistance(feature_extractor=flat)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    assert result.fid == pytest.approx(fid.compute(), rel=1e-9) and result.count == 6 and result.real_count == 4
    swd = SlicedWassersteinDistance(generator=torch.Generator().manual_seed(3))
    swd.update(real, real=True)
    swd.update(fake[:4], real=False)
    swd.update(fake[4:], real=False)
    assert result.swd == pytest.approx(swd.compute().mean, rel=1e-9)
    alone = swd_from_images(real, fake, generator=torch.Generator().manual_seed(3))
    assert ref.compare(fake).swd == pytest.approx(alone.mean)
    assert ref.compare(fake).fid == pytest.approx(result.fid, rel=1e-9)  # the real statistics are reused as is
    kid = KernelInceptionDistance(feature_extractor=flat, generator=torch.Generator().manual_seed(3))
    kid.update(real, real=True)
    kid.update(fake, real=False)
    expected = kid.compute()
    assert result.kid_subset_size == expected.subset_size == 4
    assert result.kid == pytest.approx(1e3 * expected.mean, rel=1e-9)
    assert result.kid_std == pytest.approx(1e3 * expected.std, rel=1e-9)
    # a reference rebuilt from cached statistics without the features gives FID but no KID
    cached = RealReference(real, seed=3, feature_extractor=flat, real_stats=ref.real_stats)
    assert cached.compare(fake).fid == pytest.approx(result.fid, rel=1e-9) and cached.compare(fake).kid is None


def test_charts_are_drawn():
    assert nice_ticks(0, 0.93)[0] == 0 and nice_ticks(0, 0.93)[-1] >= 0.93
    assert bar_chart(["a", "b", "c"], [1.0, None, float("nan")], title="t").size == (560, 360)
    img = line_chart({"x": ([0, 1, 2], [1.0, None, 3.0]), "y": ([0, 2], [0.5, 0.2])}, title="t", xlabel="λ")
    assert img.size == (560, 360) and len(img.getcolors(maxcolors=1 << 20)) > 3


# --- the tiny evaluation pack ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def eval_pack(tiny_pack_dir, tmp_path_factory):
    """The tiny pack plus a conventional encoder, a tiny attribute predictor and three boundaries."""
    root = tmp_path_factory.mktemp("evaluate")
    folder = root / "pack"
    shutil.copytree(tiny_pack_dir, folder)
    pack = load_pack(folder)
    num_layers, w_dim = pack.code_shape
    torch.manual_seed(7)
    conventional = DomainGuidedEncoder(EncoderConfig(resolution=32, num_layers=num_layers, w_dim=w_dim,
                                                     channels_base=8, channels_max=32)).eval()
    save_file({k: v.contiguous() for k, v in conventional.state_dict().items()}, str(root / "conv.safetensors"))
    predictor = AttributePredictor(PredictorConfig(resolution=32, binary=("Male", "Smiling"), channels=(8, 16))).eval()
    save_predictor(predictor, root / "attributes.safetensors")
    files = {"conventional_encoder.safetensors": root / "conv.safetensors",
             "attributes.safetensors": root / "attributes.safetensors"}
    names = {}
    for name, output, layers in (("smile", "Smiling", [0, 1, 2]), ("gender", "Male", [2, 3]), ("age", "age", None)):
        rows = torch.nn.functional.normalize(torch.randn(num_layers, w_dim), dim=1)
        save_boundary(root / f"{name}.npy", rows, layers=layers, meta={"predictor_output": output})
        files[f"boundaries/{name}.npy"] = root / f"{name}.npy"
        names[name] = f"boundaries/{name}.npy"
    direction = sefa(pack.generator, layers="2,3", num=1)
    save_boundary(root / "sefa_01.npy", direction.vectors[0], layers=direction.layers, meta={"method": "sefa"})
    files["directions/sefa_01.npy"] = root / "sefa_01.npy"
    update_pack(folder, files=files, config_updates={
        "conventional_encoder": to_dict(conventional.config), "predictor": predictor_entry(predictor),
        "boundaries": names, "directions": {"sefa_01": {"file": "directions/sefa_01.npy", "layers": [2, 3]}}})
    return folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Six 32-px photos prepared with labels (Smiling, UTKFace-style gender; no age)."""
    root = tmp_path_factory.mktemp("photos")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    lines = ["file,Smiling,gender"]
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
        lines.append(f"p{i}.png,{i % 2},{(i // 2) % 2}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return prepare_dataset(photos, root / "prepared", resolution=32, labels=root / "labels.csv")


FAST = ["--count", "4", "--steps", "3", "--steps-mse", "3,6", "--pairs", "3", "--lambda-dom-ablation", "0,2,40",
        "--edit-range=-2,2,3", "--edit-distance", "2", "--lec-count", "2", "--examples", "3", "--threads", "1",
        "--quiet"]


@pytest.mark.slow
def test_evaluate_end_to_end_and_resume(eval_pack, prepared, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    assert main(["evaluate", "--pack", str(eval_pack), "--images", str(prepared), "--out", str(out),
                 "--skip", "fid", *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {r["key"]: r for r in results["table1"]["rows"]}
    assert list(rows) == ["conventional", "encoder", "mse-3", "mse-6", "in-domain"]
    for r in rows.values():
        assert r["seconds_per_image"] >= 0 and r["device"] == "cpu"
        assert {"mse", "psnr", "ssim", "lpips"} <= set(r["metrics"]) and r["metrics"]["mse"]["count"] == 4
        assert r["distribution"]["fid"] is None and r["distribution"]["swd"] > 0  # --skip fid
        assert ("identity" in r["metrics"]) == HAS_DLIB
    assert rows["mse-6"]["metrics"]["mse"]["mean"] < rows["mse-3"]["metrics"]["mse"]["mean"]  # more steps fit better
    interp = results["table2"]["interpolation"]
    assert interp["pairs"] == 3 and list(interp["methods"]) == ["mse-6", "in-domain"]
    manip = results["table2"]["manipulation"]
    assert manip["boundaries"] == ["age", "gender", "smile"]
    assert manip["methods"]["in-domain"]["all"]["count"] == 2 * 4 * 3
    assert manip["methods"]["in-domain"]["per_boundary"]["smile"]["count"] == 2 * 4
    ablation = results["ablation"]["rows"]
    assert [r["lambda_dom"] for r in ablation] == [0, 2, 40]
    assert ablation[1]["metrics"]["mse"]["mean"] == pytest.approx(rows["in-domain"]["metrics"]["mse"]["mean"])
    assert ablation[1]["interpolation"] == interp["methods"]["in-domain"]  # λ_dom = 2 reuses Table 1's codes
    edits = results["edit_quality"]
    assert edits["distances"] == [-2.0, 0.0, 2.0] and set(edits["attributes"]) == {"smile", "gender", "age"}
    assert list(edits["methods"]) == ["mse-6", "in-domain"] and edits["lec"] == {"distance": 2.0, "count": 2}
    assert set(edits["attributes"]["smile"]) == {"mse-6", "in-domain"}  # the two sets of codes side by side
    smile = edits["attributes"]["smile"]["in-domain"]
    assert smile["output"] == "Smiling" and smile["layers"] == [0, 1, 2] and len(smile["target_mean"]) == 3
    assert smile["lpips"][1] == pytest.approx(0.0, abs=1e-6)  # d = 0 is the unedited reconstruction
    assert 0 <= smile["monotone_fraction"] <= 1 and set(smile["others"]) == {"age", "Male"}
    assert set(smile["slopes"]) == {"age", "Male", "Smiling"} and smile["target_slope"] == smile["slopes"]["Smiling"]
    assert smile["lec"] > 0 and smile["lec_count"] == 2 and smile["lec_relative"] == pytest.approx(
        smile["lec"] / (2.0 * np.sqrt(3)), rel=1e-4)  # three unit rows moved by d = 2
    direction = edits["directions"]["sefa_01"]["mse-6"]
    assert direction["output"] is None and direction["layers"] == [2, 3] and direction["target_mean"] is None
    assert set(direction["others"]) == set(direction["slopes"]) == {"age", "Male", "Smiling"} and direction["lec"] > 0
    pr = results["attribute_pr"]["attributes"]
    assert pr["smile"]["label_source"] == "ground truth" and pr["smile"]["positives"] == 2
    assert pr["gender"]["label_source"] == "ground truth" and pr["gender"]["positives"] == 2  # Male = 1 − gender
    assert pr["age"]["label_source"] == "predictor" and pr["age"]["threshold"] is not None
    assert set(pr["smile"]["methods"]) == set(rows) and 0 < pr["smile"]["methods"]["in-domain"]["average_precision"] <= 1
    md = (out / "results.md").read_text()
    for heading in ("Table 1", "Table 2", "λ_dom ablation", "Edit quality", "Directions found without labels", "Fig. 3"):
        assert heading in md
    assert "In-domain inversion (3 steps)" in md and "--steps-mse 3,6" in results["command"]
    for name in ("plots/table1_mse.png", "plots/table1_swd.png", "plots/table2_interpolation_swd.png",
                 "plots/table2_manipulation_swd.png", "plots/ablation.png", "plots/edit_smile.png",
                 "plots/pr_smile.png", "grids/reconstructions.png", "grids/interpolation.png",
                 "grids/edits_age.png", "grids/edits_sefa_01.png"):
        assert Image.open(out / name).size[0] > 100, name
    assert not (out / "plots/table1_fid.png").exists()
    assert len(list((out / "cache").glob("invert-*.safetensors"))) == 7  # 5 Table 1 rows + λ_dom 0 and 40
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left

    # --resume: every part comes from the cache, nothing is inverted or measured again.
    def fail(*args, **kwargs):
        raise AssertionError("recomputed a cached part")

    monkeypatch.setattr("idinvert.evaluation.suite.invert", fail)
    monkeypatch.setattr("idinvert.evaluation.suite.pair_metrics", fail)
    monkeypatch.setattr("idinvert.evaluation.suite.edit_quality", fail)
    (out / "results.json").unlink()
    assert main(["evaluate", "--pack", str(eval_pack), "--images", str(prepared), "--out", str(out),
                 "--skip", "fid", "--resume", *FAST]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["table1"] == results["table1"] and again["attribute_pr"] == results["attribute_pr"]


@pytest.mark.slow
def test_evaluate_fid_path_and_errors(eval_pack, prepared, tmp_path, capsys):
    out = tmp_path / "fid"
    # One FID (2048² eigendecompositions: seconds on a loaded CPU) with the real Inception on 3 images.
    assert main(["evaluate", "--pack", str(eval_pack), "--images", str(prepared / ".." / "photos"), "--out",
                 str(out), "--count", "3", "--methods", "encoder", "--skip", "swd", "lpips", "id", "interpolation",
                 "ablation", "edits", "pr", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    (row,) = results["table1"]["rows"]
    assert row["key"] == "encoder" and row["distribution"]["fid"] > 0 and row["distribution"]["count"] == 3
    assert row["distribution"]["kid"] is not None and row["distribution"]["kid_subset_size"] == 3
    assert results["table2"]["interpolation"] == {"skipped": "--skip interpolation"}
    assert "FID ↓ (n = 3)" in (out / "results.md").read_text() and "KID ×1e3 ↓" in (out / "results.md").read_text()
    assert (out / "plots/table1_fid.png").is_file() and (out / "cache/real-statistics.safetensors").is_file()
    capsys.readouterr()
    assert main(["evaluate", "--pack", str(eval_pack), "--images", str(prepared), "--out", str(tmp_path / "x"),
                 "--count", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert main(["evaluate", "--pack", str(eval_pack), "--images", str(prepared), "--out", str(tmp_path / "x"),
                 "--boundaries", "sparkle"]) == 2
    assert "no boundary sparkle" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_spread_subset_takes_evenly_spaced_images(prepared):
    from idinvert.evaluation.imageset import load_image_set, subset_indices

    assert subset_indices(10, 4, spread=True) == [0, 3, 6, 9]
    assert subset_indices(10, 4) == [0, 1, 2, 3] and subset_indices(3, 5, spread=True) == [0, 1, 2]
    first = load_image_set([str(prepared)], 32, 3, None)
    spread = load_image_set([str(prepared)], 32, 3, None, spread=True)
    assert first.names == ["p0.png", "p1.png", "p2.png"]
    assert spread.names == ["p0.png", "p2.png", "p5.png"]  # linspace(0, 5, 3) rounds 2.5 to 2
    assert torch.equal(spread.images[1], first.images[2])
    assert [str(r["Smiling"]) for r in spread.rows] == ["0", "0", "1"]  # labels follow their images


def test_library_evaluate_without_attributes(tiny_pack):
    """The tiny pack alone: no conventional encoder, no boundaries — noted, not failed."""
    torch.manual_seed(0)
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    config = EvaluationConfig(methods=("in-domain", "mse", "encoder", "conventional"), steps=2, steps_mse=(2,),
                              pairs=2, lambda_dom_ablation=(0.0,),
                              skip=frozenset({"fid", "lpips", "id"}), examples=0)
    cache = MemoryCache()
    result = evaluate(tiny_pack, images, config, cache=cache)
    r = result.results
    assert [row["key"] for row in r["table1"]["rows"]] == ["encoder", "mse-2", "in-domain"]  # the paper's order
    assert r["table2"]["manipulation"]["skipped"] == "the pack has no boundaries"
    assert r["edit_quality"]["skipped"] == "the pack has no boundaries or directions"
    assert r["attribute_pr"]["skipped"] == "the pack has no boundaries"
    assert any("conventional encoder" in note for note in r["notes"])
    assert result.codes["in-domain"].shape == (3, *tiny_pack.code_shape)
    again = evaluate(tiny_pack, images, config, cache=cache).results  # a memory cache resumes too
    assert again["table1"] == r["table1"]


def test_edit_quality_on_known_scores(tiny_pack):
    """A predictor whose 'Smiling' logit is a linear read-out of the image moves monotonically with d."""
    torch.manual_seed(0)
    predictor = AttributePredictor(PredictorConfig(resolution=32, binary=("Male", "Smiling"), channels=(8, 16))).eval()
    codes = torch.randn(3, *tiny_pack.code_shape)
    boundary = Boundary(torch.nn.functional.normalize(torch.randn(tiny_pack.code_shape), dim=1), layers=(0, 1))
    q = edit_quality(tiny_pack.generator, predictor, codes, boundary, attribute="smile", output="Smiling",
                     distances=(1.0, -1.0, 0.0), layers=[0, 1], lpips=True, identity=False)
    assert q.distances == [-1.0, 0.0, 1.0] and q.count == 3 and len(q.target_mean) == 3
    assert q.lpips[1] == pytest.approx(0.0, abs=1e-6) and q.lpips[0] > 0
    assert set(q.others) == {"age", "Male"} and q.identity is None
    assert -1 <= q.spearman <= 1 and q.monotone_fraction in (0.0, 1 / 3, 2 / 3, 1.0)
