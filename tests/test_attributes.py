"""Attribute predictor, boundary training and the attribute verbs at tiny size."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from idinvert.attributes import load_predictor, predictor_output
from idinvert.attributes.boundary import project_out
from idinvert.attributes.predictor import AttributePredictor, PredictorConfig, PredictorTargets, predictor_loss, roc_auc
from idinvert.attributes.train import dataset_targets
from idinvert.cli import main
from idinvert.boundaries import load_boundary
from idinvert.errors import ConfigError
from idinvert.pack import load_pack
from idinvert.datasets import ImageDataset, prepare_dataset

BINARY = ("Male", "Smiling")


def make_labelled_set(root, kind: str, n: int = 24):
    """Photos whose brightness decides 'Smiling' (learnable), with UTKFace- or CelebA-style labels."""
    from PIL import Image

    photos = root / f"{kind}_photos"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(1 if kind == "utk" else 2)
    rows = ["file,split,age,gender,Smiling,Male"]
    for i in range(n):
        bright = i % 2
        level = 200 if bright else 50
        img = np.clip(rng.normal(level, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(photos / f"{kind}{i:03d}.png")
        if kind == "utk":
            rows.append(f"{kind}{i:03d}.png,train,{20 + 40 * bright},{bright},,")
        else:
            rows.append(f"{kind}{i:03d}.png,train,,,{bright},{1 - bright}")
    (root / f"{kind}.csv").write_text("\n".join(rows) + "\n")
    out = root / f"{kind}_prepared"
    prepare_dataset(photos, out, resolution=32, labels=root / f"{kind}.csv", split="train")
    return out


def test_roc_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=200) + labels + np.round(rng.normal(size=200))  # with ties
    assert roc_auc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(roc_auc_score(labels, scores))
    assert np.isnan(roc_auc(torch.tensor([1.0, 2.0]), torch.tensor([1, 1])))


def test_loss_masks_missing_labels():
    torch.manual_seed(0)
    model = AttributePredictor(PredictorConfig(resolution=32, binary=BINARY, channels=(8, 16)))
    x = torch.randn(4, 3, 32, 32)
    t = PredictorTargets(binary=torch.tensor([[1.0, float("nan")]] * 4), age=torch.tensor([30.0, float("nan")] * 2))
    losses = predictor_loss(model, x, t)
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    assert model.binary_head.weight.grad[1].abs().sum() == 0  # no label for Smiling: no gradient into it
    assert model.binary_head.weight.grad[0].abs().sum() > 0


def test_targets_from_both_label_styles(tmp_path):
    utk = ImageDataset(make_labelled_set(tmp_path, "utk", n=4))
    t = dataset_targets(utk, BINARY)
    assert t.binary[:, 0].tolist() == [1.0, 0.0, 1.0, 0.0]  # Male = 1 − gender
    assert torch.isnan(t.binary[:, 1]).all() and t.age.tolist() == [20.0, 60.0, 20.0, 60.0]
    cel = ImageDataset(make_labelled_set(tmp_path, "cel", n=4))
    t = dataset_targets(cel, BINARY)
    assert t.binary[:, 1].tolist() == [0.0, 1.0, 0.0, 1.0] and torch.isnan(t.age).all()


@pytest.fixture(scope="module")
def pack_with_predictor(tmp_path_factory, tiny_pack_dir):
    root = tmp_path_factory.mktemp("attr")
    pack = root / "pack"
    shutil.copytree(tiny_pack_dir, pack)
    utk, cel = make_labelled_set(root, "utk"), make_labelled_set(root, "cel")
    assert main(["train-predictor", "--data", str(utk), str(cel), "--test", str(utk), str(cel), "--run-dir",
                 str(root / "run"), "--kimg", "0.4", "--batch", "16", "--pack", str(pack), "--quiet"]) == 0
    return pack, root


def test_predictor_is_trained_reported_and_in_the_pack(pack_with_predictor):
    pack_dir, root = pack_with_predictor
    report = json.loads((root / "run" / "report.json").read_text())
    assert report["auc"]["Smiling"] >= 0.9  # brightness is easy to learn (AUC: BN statistics of 25 steps shift the threshold)
    assert report["age_mae"] < 20
    pack = load_pack(pack_dir)
    predictor = load_predictor(pack)
    assert predictor_output("smile", predictor) == "Smiling"
    with pytest.raises(ConfigError, match="unknown attribute"):
        predictor_output("sparkle", predictor)


@pytest.mark.slow
def test_boundary_training_and_editing_by_name(pack_with_predictor, tmp_path):
    pack_dir, _ = pack_with_predictor
    assert main(["train-boundary", "--model", str(pack_dir), "--attribute", "smile", "--samples", "300",
                 "--search-samples", "32", "--quiet"]) == 0
    assert main(["train-boundary", "--model", str(pack_dir), "--attribute", "age", "--samples", "300",
                 "--search-samples", "32", "--condition", "smile", "--layers", "0-3", "--quiet"]) == 0
    pack = load_pack(pack_dir)
    smile = np.load(pack.file("boundaries/smile.npy"), allow_pickle=True)[()]
    assert smile["boundary"].shape == (1, 8, 32)
    assert np.allclose(np.linalg.norm(smile["boundary"][0], axis=1), 1, atol=1e-5)
    assert smile["meta_data"]["manipulate_layers"] and len(smile["meta_data"]["svm_accuracy"]) == 8
    age = load_boundary(pack.file("boundaries/age.npy"), pack.code_shape)
    assert list(age.layers) == [0, 1, 2, 3]
    # conditioned: orthogonal to the smile rows, layer by layer
    dots = (age.direction.numpy() * smile["boundary"][0]).sum(axis=1)
    assert np.abs(dots).max() < 1e-5
    out = tmp_path / "edit"
    photo = tmp_path / "p.png"
    from idinvert.images import save_image

    save_image(torch.zeros(3, 32, 32), photo)
    assert main(["edit", str(photo), "--attribute", "smile", "--model", str(pack_dir), "--steps", "3",
                 "--out", str(out), "--quiet"]) == 0
    assert np.load(out / "codes.npy").shape[0] == 1


def test_attributes_lists_the_pack(pack_with_predictor, capsys):
    pack_dir, _ = pack_with_predictor
    assert main(["train-boundary", "--model", str(pack_dir), "--attribute", "gender", "--samples", "200",
                 "--search-samples", "32", "--quiet"]) == 0
    assert main(["attributes", "--model", str(pack_dir), "--json"]) == 0
    names = [a["name"] for a in json.loads(capsys.readouterr().out)["attributes"]]
    assert "gender" in names


def test_projection_removes_the_condition():
    rng = np.random.default_rng(0)
    b, c = rng.normal(size=(1, 4, 8)), rng.normal(size=(1, 4, 8))
    p = project_out(b, c)
    assert np.allclose((p[0] * c[0]).sum(1), 0, atol=1e-6)
    assert np.allclose(np.linalg.norm(p[0], axis=1), 1, atol=1e-6)


def test_projection_removes_every_condition_at_once():
    """Two correlated conditions: the result is orthogonal to both (one after the other would leave a
    component along the first)."""
    rng = np.random.default_rng(1)
    b, c1 = rng.normal(size=(1, 3, 8)), rng.normal(size=(1, 3, 8))
    c2 = c1 + 0.5 * rng.normal(size=(1, 3, 8))
    p = project_out(b, c1, c2)
    for c in (c1, c2):
        assert np.allclose((p[0] * c[0]).sum(1), 0, atol=1e-6)
    assert not np.allclose((project_out(project_out(b, c1), c2)[0] * c1[0]).sum(1), 0, atol=1e-3)


def test_a_predictor_reads_the_crop_of_a_looser_framing():
    from idinvert.align import Framing, utkface_framing
    from idinvert.attributes import predictor_config_from_dict, predictor_entry
    from idinvert.attributes.predictor import AttributePredictor, PredictorConfig, crop_between, crop_square

    tight = utkface_framing(64)
    assert crop_between(tight, tight) == pytest.approx((0.0, 0.0, 1.0), abs=1e-3)
    # the same face at half the size, centred: the tight frame is the middle half of the loose one
    half = {k: tuple(0.25 + 0.5 * v for v in getattr(tight, k)) for k in ("eye_left", "eye_right", "mouth")}
    loose = Framing(**half, size=64)
    assert crop_between(loose, tight) == pytest.approx((0.25, 0.25, 0.5), abs=1e-3)
    x = torch.zeros(1, 1, 8, 8)
    x[..., 2:6, 2:6] = 1.0  # the middle half is white
    assert torch.allclose(crop_square(x, (0.25, 0.25, 0.5), 4), torch.ones(1, 1, 4, 4))
    model = AttributePredictor(PredictorConfig(resolution=32, binary=("Smiling",), channels=(4, 8),
                                               input_crop=(0.25, 0.25, 0.5)))
    entry = predictor_entry(model)
    assert predictor_config_from_dict(entry["config"]).input_crop == (0.25, 0.25, 0.5)
    logits, age = model.eval()(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 1) and age.shape == (2,)
    with pytest.raises(ConfigError, match="inside the image"):
        PredictorConfig(input_crop=(0.8, 0.0, 0.5))


def test_platt_scaling_and_the_age_line_recover_known_calibrations():
    from idinvert.attributes.calibration import fit_linear, fit_platt, log_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, generator=g) * 2
    labels = (torch.rand(4000, generator=g) < torch.sigmoid(2.5 * logits - 1.0)).float()  # under-confident logits
    a, b = fit_platt(logits, labels)
    assert abs(a - 2.5) < 0.25 and abs(b + 1.0) < 0.2
    assert log_loss(a * logits + b, labels) < log_loss(logits, labels)
    readings = torch.rand(200, generator=g) * 60
    a, b = fit_linear(readings, 1.4 * readings - 5)
    assert abs(a - 1.4) < 1e-6 and abs(b + 5) < 1e-4
    with pytest.raises(ValueError, match="each class"):
        fit_platt(logits[:30], torch.ones(30))


def test_a_crafted_calibration_in_a_pack_is_refused(pack_with_predictor, tmp_path):
    from idinvert.errors import CheckpointError, ConfigError

    pack_dir, _ = pack_with_predictor
    for bad, match in (({"Smiling": [float("nan"), 0]}, "NaN is not JSON"), ({"Smiling": [-1, 0]}, "out of range"),
                       ({"age": [1.0, 1e6]}, "out of range"),
                       ({"Sparkle": [1, 0]}, "does not output"), ({"Smiling": "steep"}, r"\[scale, shift\]"),
                       (["Smiling"], "JSON object")):
        folder = tmp_path / f"pack{abs(hash(str(bad)))}"
        shutil.copytree(pack_dir, folder)
        config = json.loads((folder / "config.json").read_text())
        config["predictor"]["calibration"] = bad
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises((CheckpointError, ConfigError), match=match):
            load_predictor(load_pack(folder))
    folder = tmp_path / "good"
    shutil.copytree(pack_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["predictor"]["calibration"] = {"Smiling": [2, 0.5], "age": [1.1, -2]}
    (folder / "config.json").write_text(json.dumps(config))
    assert load_predictor(load_pack(folder)).calibration == {"Smiling": (2.0, 0.5), "age": (1.1, -2.0)}
