"""Pivotal tuning (refine.py) and tuned generators (tuned.py) with tiny generators of every kind."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_networks
from idinvert.cli import main
from idinvert.networks.config import EncoderConfig
from idinvert.boundaries import save_boundary
from idinvert.errors import CheckpointError, ConfigError
from idinvert.images import read_image
from idinvert.engine.inversion import InversionConfig, invert
from idinvert.metrics import lpips as lpips_module
from idinvert.networks import DCGANConfig, DCGANGenerator, DomainGuidedEncoder
from idinvert.pack import load_pack, save_pack, update_pack
from idinvert.perceptual import default_perceptual_config
from idinvert.engine.refine import RefineConfig, refine
from idinvert.engine.tuned import TunedWeights, fingerprint, load_tuned, save_tuned, synthesize_tuned, tunable_names

KINDS = ("stylegan", "dcgan", "stylegan2")


def tiny_dcgan(seed: int = 0) -> DCGANGenerator:
    """A 32 px DCGAN (codes [N, 1, 16]) with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    g = DCGANGenerator(DCGANConfig(resolution=32, z_dim=16, fmaps=(32, 16, 8)))
    for name, buf in g.named_buffers():
        if "running_mean" in name:
            buf.normal_(0, 0.1)
        elif "running_var" in name:
            buf.uniform_(0.5, 2.0)
    for name, p in g.named_parameters():
        p.data.normal_(0, 0.3) if "convTr" in name else p.data.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
    return g.eval()


def tiny_generator(kind: str, seed: int = 0):
    if kind == "stylegan2":
        from test_stylegan2 import tiny_networks as stylegan2_networks

        return stylegan2_networks(seed, resolution=32)[0]  # LPIPS needs 32 px
    return tiny_networks(seed)[0] if kind == "stylegan" else tiny_dcgan(seed)


def stub_pack(generator) -> SimpleNamespace:
    """What ``refine`` reads from a pack."""
    return SimpleNamespace(generator=generator, resolution=generator.resolution, device=generator.device)


def problem(generator, n: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Images the generator can almost make (another sample, blended with noise) and pivot codes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        codes = generator.sample_codes(torch.randn(n, generator.z_dim, generator=g), truncation_psi=1.0)
        other = generator.synthesize(generator.sample_codes(torch.randn(n, generator.z_dim, generator=g),
                                                            truncation_psi=1.0))
    images = (0.5 * other + 0.5 * (torch.rand(other.shape, generator=g) * 2 - 1)).clamp(-1, 1)
    return images, codes


@pytest.mark.parametrize("kind", KINDS)
def test_the_tunable_weights_are_what_synthesis_reads(kind):
    g = tiny_generator(kind)
    names = tunable_names(g)
    if kind != "dcgan":  # the mapping network (and StyleGAN's lod) take no part in synthesising from W+
        assert names and all(n.startswith("synthesis.") for n in names) and "synthesis.lod" not in names
    else:
        assert set(names) == {k for k, _ in g.named_parameters()}  # convolutions and BN affines
        assert not any("running" in n for n in names)


@pytest.mark.parametrize("kind", KINDS)
def test_vmapped_synthesis_equals_each_modified_generator(kind):
    g = tiny_generator(kind)
    torch.manual_seed(2)
    tuned = TunedWeights({k: 0.05 * torch.randn(3, *v.shape) for k, v in g.named_parameters()
                          if k in tunable_names(g)})
    codes = g.sample_codes(torch.randn(6, g.z_dim)).view(3, 2, *g.code_shape)
    images = synthesize_tuned(g, tuned, codes, batch_size=3)  # chunks of 1 image × 2 codes
    assert images.shape == (3, 2, 3, 32, 32)
    for i in range(3):
        gi = copy.deepcopy(g)
        for k, delta in tuned.deltas.items():
            gi.get_parameter(k).data += delta[i]
        with torch.no_grad():
            assert torch.allclose(images[i], gi.synthesize(codes[i]), atol=1e-5)
    assert torch.allclose(synthesize_tuned(g, TunedWeights.zeros(g, 3), codes[:, :1])[:, 0],
                          synthesize_tuned(g, None, codes[:, 0]), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_tuning_lowers_the_loss_and_keeps_the_codes(kind):
    g = tiny_generator(kind)
    before_state = {k: v.clone() for k, v in g.state_dict().items()}
    images, codes = problem(g)
    pivots = codes.clone()
    result = refine(images, codes, stub_pack(g), RefineConfig(steps=15, lr=3e-3, lpips_threshold=None))
    assert torch.equal(codes, pivots) and torch.equal(result.codes, pivots)  # the pivots are not optimised
    assert all(torch.equal(v, before_state[k]) for k, v in g.state_dict().items())  # the pack's G untouched
    total = result.losses["total"]
    assert total.shape == (15, 3) and (total[-1] < 0.8 * total[0]).all()
    assert (result.after["lpips"] < result.before["lpips"]).all() and (result.after["mse"] < result.before["mse"]).all()
    assert result.steps_run.tolist() == [15, 15, 15]
    report = result.report()
    assert set(report[0]) == {"steps", "mse_before", "mse_after", "lpips_before", "lpips_after"}
    with torch.no_grad():  # the reconstructions are the tuned generators' images of the pivots
        assert torch.allclose(result.reconstructions, synthesize_tuned(g, result.tuned, codes), atol=1e-6)


def test_tuning_some_layers_leaves_the_others_and_keeps_the_fingerprint():
    g = tiny_dcgan()
    images, codes = problem(g)
    full = refine(images, codes, stub_pack(g), RefineConfig(steps=6, lr=3e-3, lpips_threshold=None))
    late = refine(images, codes, stub_pack(g), RefineConfig(steps=6, lr=3e-3, lpips_threshold=None,
                                                            layers=("convTr3", "batchNorm2")))
    assert sorted(late.tuned.deltas) == ["batchNorm2.bias", "batchNorm2.weight", "convTr3.weight"]
    assert all(v.abs().sum() > 0 for v in late.tuned.deltas.values())
    assert late.base == full.base == fingerprint(g)  # files stay readable by load_tuned
    assert (late.after["mse"] < late.before["mse"]).all()
    with torch.no_grad():
        assert torch.allclose(late.reconstructions, synthesize_tuned(g, late.tuned, codes), atol=1e-6)
    with pytest.raises(ConfigError, match="name none"):
        refine(images, codes, stub_pack(g), RefineConfig(steps=1, layers=("mapping",)))
    with pytest.raises(ConfigError, match="tuple"):
        RefineConfig(layers="convTr3")


@pytest.mark.parametrize("kind", KINDS)
def test_locality_regulariser_runs_and_is_seeded(kind):
    g = tiny_generator(kind)
    images, codes = problem(g, n=2)
    config = RefineConfig(steps=3, lr=3e-3, lpips_threshold=None, locality=True)
    a = refine(images, codes, stub_pack(g), config, rng=torch.Generator().manual_seed(0))
    b = refine(images, codes, stub_pack(g), config, rng=torch.Generator().manual_seed(0))
    c = refine(images, codes, stub_pack(g), RefineConfig(steps=3, lr=3e-3, lpips_threshold=None))
    assert torch.equal(a.reconstructions, b.reconstructions)
    # At step 1 the copies are the original generator (locality term 0); after updates it pulls back.
    assert torch.equal(a.losses["total"][0], c.losses["total"][0])
    assert not torch.equal(a.reconstructions, c.reconstructions)


@pytest.fixture()
def double_lpips(monkeypatch):
    """LPIPS in float64 (its module casts inputs to its own dtype)."""
    model = copy.deepcopy(lpips_module.cached_lpips("vgg", torch.device("cpu"))).double()
    module = sys.modules["idinvert.engine.refine"]  # the attribute idinvert.refine is the function
    monkeypatch.setattr(module, "cached_lpips", lambda net, device: model)
    monkeypatch.setattr(module, "_scores", lambda x, r: {"mse": (x - r).square().flatten(1).mean(1),
                                                         "lpips": model(x, r.clamp(-1, 1))})


@pytest.mark.parametrize("kind", KINDS)
def test_batched_tuning_equals_tuning_each_image_alone(kind, double_lpips):
    """In float64: one vmapped batch of 3 generators follows the 3 separate runs (4 Adam steps). (In float32 the runs
    agree for the first steps only: Adam turns the rounding noise of near-zero gradients, e.g. of a
    bias before instance norm, into full-size steps, so trajectories drift apart by chance.)"""
    g = tiny_generator(kind)
    images, codes = problem(g)
    g, images, codes = g.double(), images.double(), codes.double()
    config = RefineConfig(steps=4, lr=3e-3, lpips_threshold=None)
    together = refine(images, codes, stub_pack(g), config)
    for i in (0, 2):
        alone = refine(images[i:i + 1], codes[i:i + 1], stub_pack(g), config)
        assert torch.allclose(alone.losses["total"][:, 0], together.losses["total"][:, i], rtol=1e-9)
        for k, v in alone.tuned.deltas.items():
            assert torch.allclose(v[0], together.tuned.deltas[k][i], atol=1e-9), k
        assert torch.allclose(alone.reconstructions[0], together.reconstructions[i], atol=1e-9)


def test_float32_batched_tuning_agrees_for_the_first_steps():
    g = tiny_generator("stylegan")
    images, codes = problem(g)
    config = RefineConfig(steps=2, lr=3e-4, lpips_threshold=None)
    together = refine(images, codes, stub_pack(g), config)
    alone = refine(images[1:2], codes[1:2], stub_pack(g), config)
    # float32 convolutions of batch 1 and batch 2 may sum in another order: 1.1e-5 relative on this machine's
    # CPU (it was below 1e-5 on earlier ones); a tuning that leaked across images would differ by far more
    assert torch.allclose(alone.losses["total"][:, 0], together.losses["total"][:, 1], rtol=1e-4)


def test_early_stop_leaves_an_image_that_is_close_enough_untouched():
    g = tiny_generator("stylegan")
    images, codes = problem(g, n=2)
    with torch.no_grad():
        images[0] = g.synthesize(codes[:1])[0]  # already reproduced: LPIPS 0 ≤ 0.06 before any update
    result = refine(images, codes, stub_pack(g), RefineConfig(steps=4, lr=3e-3))
    assert result.steps_run.tolist() == [0, 4]
    assert result.tuned.changed().tolist() == [False, True]
    with torch.no_grad():
        assert torch.allclose(result.reconstructions[0], g.synthesize(codes[:1])[0], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_tuned_files_float16_round_trip_and_refuse_another_generator(kind, tmp_path):
    g = tiny_generator(kind)
    images, codes = problem(g, n=2)
    result = refine(images, codes, stub_pack(g), RefineConfig(steps=10, lr=3e-3, lpips_threshold=None))
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.safetensors")
        assert save_tuned(paths[-1], {k: v[i] for k, v in result.tuned.deltas.items()}, base=result.base) > 0
    loaded = load_tuned([paths[0], None, paths[1]], g)
    assert loaded.changed().tolist() == [True, False, True]
    images16 = synthesize_tuned(g, loaded.select([0, 2]), codes)
    error = (images16 - result.reconstructions).abs().max()
    assert error < 2e-3  # float16 deltas: far below one 8-bit level (2/255 ≈ 7.8e-3 on [-1, 1])
    other = tiny_generator(kind, seed=5)
    assert fingerprint(other) != result.base
    with pytest.raises(CheckpointError, match="another generator"):
        load_tuned([paths[0]], other)


def test_invert_api_refines_after_inverting(tiny_pack):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    config = InversionConfig(steps=2, refine="pti")
    assert config.refine == RefineConfig()
    result = invert(x, tiny_pack, InversionConfig(steps=2, refine=RefineConfig(steps=3)))
    assert result.refined is not None and torch.equal(result.refined.codes, result.codes)
    assert result.refined.steps_run.tolist() == [3, 3] and len(result.refined.tuned) == 2
    assert invert(x, tiny_pack, InversionConfig(steps=1)).refined is None
    with pytest.raises(ConfigError):
        InversionConfig(refine="gan-tuning")


# --- the command line ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dcgan_pack_dir(tmp_path_factory) -> Path:
    g = tiny_dcgan()
    torch.manual_seed(1)
    enc = EncoderConfig(resolution=32, num_layers=1, w_dim=16, channels_base=8, channels_max=32)
    folder = tmp_path_factory.mktemp("dcgan") / "tiny-dcgan"
    save_pack(folder, name="tiny-dcgan", generator=g, encoder=DomainGuidedEncoder(enc).eval(),
              perceptual_config=default_perceptual_config("torchvision"))
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def with_boundary(pack_dir: Path, tmp_path: Path) -> Path:
    pack = load_pack(pack_dir)
    b = tmp_path / "b.npy"
    save_boundary(b, torch.nn.functional.normalize(torch.randn(1, pack.code_shape[1]), dim=1))
    return b


@pytest.mark.parametrize("kind", KINDS)
def test_a_refined_invert_folder_is_read_back_by_edit(kind, tiny_pack_dir, dcgan_pack_dir, photos, tmp_path):
    pack_dir = tiny_pack_dir if kind == "stylegan" else dcgan_pack_dir
    inv = tmp_path / "inv"
    assert main(["invert", str(photos), "--model", str(pack_dir), "--out", str(inv), "--steps", "2",
                 "--refine", "pti", "--refine-steps", "3", "--quiet"]) == 0
    manifest = json.loads((inv / "manifest.json").read_text())
    entry = manifest["refine"]
    assert entry["method"] == "pti" and entry["settings"]["steps"] == 3 and entry["dtype"] == "float16"
    assert entry["files"] == {"a": "a_tuned.safetensors", "b": "b_tuned.safetensors"}
    assert [r["steps"] for r in entry["per_image"]] == [3, 3]
    assert "a_pti.png" in (inv / "index.html").read_text()
    codes_before = np.load(inv / "codes.npy")

    out = tmp_path / "edit"
    assert main(["edit", str(inv), "--boundary", str(with_boundary(pack_dir, tmp_path)), "--steps", "3",
                 "--model", str(pack_dir), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "manifest.json").read_text())["tuned_generators"] is True
    for name in ("a", "b"):  # the edit's reconstruction is the tuned generator's, not the pack's
        edited_inv = np.asarray(Image.open(out / f"{name}_inv.png"), dtype=np.int16)
        pti = np.asarray(Image.open(inv / f"{name}_pti.png"), dtype=np.int16)
        untuned = np.asarray(Image.open(inv / f"{name}_inv.png"), dtype=np.int16)
        assert np.abs(edited_inv - pti).max() <= 1 and np.abs(edited_inv - untuned).max() > 1
    assert np.array_equal(np.load(inv / "codes.npy"), codes_before)

    # a second photo folder, untuned: interpolation fades the tuning out towards it
    other = tmp_path / "other"
    assert main(["invert", str(photos / "a.png"), "--model", str(pack_dir), "--out", str(other), "--steps", "2",
                 "--quiet"]) == 0
    interp = tmp_path / "interp"
    assert main(["interpolate", str(inv), str(other), "--steps", "2", "--model", str(pack_dir), "--out",
                 str(interp), "--quiet"]) == 0
    assert json.loads((interp / "manifest.json").read_text())["tuned_generators"] == {"source": True, "target": False}
    assert np.abs(np.asarray(Image.open(interp / "src_a_inv.png"), dtype=np.int16)
                  - np.asarray(Image.open(inv / "a_pti.png"), dtype=np.int16)).max() <= 1


def test_edit_refines_photos_on_the_spot_and_a_wrong_pack_is_refused(tiny_pack_dir, dcgan_pack_dir, photos,
                                                                        tmp_path):
    out = tmp_path / "edit"
    assert main(["edit", str(photos / "a.png"), "--boundary", str(with_boundary(tiny_pack_dir, tmp_path)),
                 "--steps", "2", "--refine", "pti", "--refine-steps", "2", "--model", str(tiny_pack_dir),
                 "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tuned_generators"] is True and manifest["refine"]["per_image"][0]["steps"] == 2

    inv = tmp_path / "inv"
    assert main(["invert", str(photos / "a.png"), "--model", str(tiny_pack_dir), "--out", str(inv), "--steps", "1",
                 "--refine", "pti", "--refine-steps", "1", "--quiet"]) == 0
    other_pack = tmp_path / "other-pack"
    g, e = tiny_networks(seed=3)
    save_pack(other_pack, name="tiny", generator=g, encoder=e, perceptual_config=default_perceptual_config("torchvision"))
    assert main(["edit", str(inv), "--boundary", str(with_boundary(tiny_pack_dir, tmp_path)), "--model",
                 str(other_pack), "--out", str(tmp_path / "bad"), "--quiet"]) == 2


# --- evaluate ------------------------------------------------------------------------------------------

def test_evaluate_adds_pti_rows_for_both_pivots(tiny_pack):
    from idinvert.attributes.predictor import AttributePredictor, PredictorConfig
    from idinvert.boundaries import Boundary
    from idinvert.evaluation import EvaluationConfig, evaluate
    from idinvert.evaluation.outputs import markdown

    torch.manual_seed(0)
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    predictor = AttributePredictor(PredictorConfig(resolution=32, binary=("Smiling",), channels=(8, 16))).eval()
    smile = Boundary(torch.nn.functional.normalize(torch.randn(1, tiny_pack.code_shape[1]), dim=1),
                     meta={"predictor_output": "Smiling"})
    config = EvaluationConfig(methods=("in-domain", "mse"), steps=2, steps_mse=(2,), pairs=2, lambda_dom_ablation=(0.0,),
                              skip=frozenset({"fid", "swd", "id", "edits", "pr", "interpolation", "ablation"}),
                              examples=0, refine_steps=3, refine_batch=2)
    r = evaluate(tiny_pack, images, config, predictor=predictor, boundaries={"smile": smile}).results
    pti = r["pti"]
    assert list(pti["pivots"]) == ["mse-2", "in-domain"] and pti["settings"]["steps"] == 3
    for entry in pti["pivots"].values():
        assert entry["timing"]["steps_max"] == 3 and entry["timing"]["batch_size"] == 2
        assert entry["tuned"]["lpips"]["mean"] < entry["untuned"]["lpips"]["mean"]
        edits = entry["edits"]["smile"]
        assert all(isinstance(edits[w]["target_change"], float) for w in ("untuned", "tuned"))
    assert "## Pivotal tuning (PTI)" in markdown({**r, "model": {"name": "tiny"}})


# --- the editor's "faithful (slower)" switch ----------------------------------------------------------

def test_the_editor_tunes_in_the_queue_and_renders_faithfully_on_request(tiny_pack_dir, tmp_path):
    pytest.importorskip("flask")
    import time

    from idinvert.server import ServerOptions, create_app
    from test_server import inverted_session, make_edit_pack, render

    pack = load_pack(make_edit_pack(tiny_pack_dir, tmp_path / "tiny-edit"))
    app = create_app(pack, ServerOptions(steps=2, alignment="center", temp_parent=tmp_path, samples={}))
    try:
        app.extensions["idinvert"].editor.refine_steps = 3
        client = app.test_client()
        sid = inverted_session(client)
        untuned = render(client, sid)
        assert np.array_equal(render(client, sid, faithful=True), untuned)  # nothing tuned yet
        r = client.post(f"/api/session/{sid}/a/refine")
        assert r.status_code == 202 and r.json["job"]["kind"] == "refine" and r.json["job"]["steps"] == 3
        deadline, info = time.monotonic() + 60, {}
        while time.monotonic() < deadline and not info.get("faithful"):
            info = client.get(f"/api/session/{sid}/status").json["slots"]["a"]
            time.sleep(0.05)
        assert info["faithful"] and info["refine"]["state"] == "done" and info["refine_seconds"] > 0
        faithful = render(client, sid, faithful=True)
        assert np.abs(faithful.astype(int) - untuned).max() > 1
        assert np.array_equal(render(client, sid), untuned)  # switched off: the pack's generator
        assert not np.array_equal(render(client, sid, faithful=True, edits={"smile": 3.0}), faithful)
        assert client.post(f"/api/session/{sid}/render", json={"faithful": "yes"}).status_code == 400
        assert client.post(f"/api/session/{sid}/a/invert", json={"face": 0}).status_code == 202
        assert client.get(f"/api/session/{sid}/status").json["slots"]["a"]["faithful"] is False  # a new code
    finally:
        app.extensions["idinvert"].close()


def test_the_pack_holds_its_own_tuning_defaults(dcgan_pack_dir, tmp_path):
    from idinvert.engine.refine import pack_refine_config
    from idinvert.pack import copy_pack

    assert pack_refine_config(load_pack(dcgan_pack_dir)) == RefineConfig()
    folder = tmp_path / "p"
    copy_pack(load_pack(dcgan_pack_dir), folder)
    update_pack(folder, config_updates={"refine": {"layers": ["convTr3", "convTr4"], "steps": 40,
                                                    "locality_alpha": 3}})
    config = pack_refine_config(load_pack(folder), steps=7, locality=True)
    assert (config.layers, config.steps, config.locality, config.locality_alpha) == (("convTr3", "convTr4"), 7,
                                                                                     True, 3.0)
    update_pack(folder, config_updates={"refine": {"layers": "convTr3"}})
    with pytest.raises(ConfigError, match="refine setting 'layers'"):
        load_pack(folder).refine_settings()
