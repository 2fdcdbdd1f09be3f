"""Training at tiny size: data preparation, GAN, encoders, resume, stop, NaN, data parallelism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from idinvert.cli import main
from idinvert.errors import NonFiniteError
from idinvert.pack import load_pack
from idinvert.training.data import BatchSampler, load_batch
from idinvert.datasets import ImageDataset, prepare_dataset

HERE = Path(__file__).parent
GAN_ARGS = ["--preset", "small64", "--resolution", "16", "--w-dim", "16", "--fmaps-base", "64", "--fmaps-max",
            "16", "--mapping-layers", "2", "--batch", "4", "--batch-low", "4", "--lod-initial", "8",
            "--lod-kimg", "0.008", "--r1-interval", "2", "--snapshot-kimg", "0.012", "--quiet"]


def make_photos(folder: Path, n: int = 12, size: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def data16(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    photos = make_photos(root / "photos")
    (photos / "corrupt.png").write_bytes(b"\x89PNG\r\n broken")
    out = root / "prepared16"
    with pytest.warns(UserWarning, match="corrupt.png"):
        assert main(["prepare-data", str(photos), "--out", str(out), "--resolution", "16"]) == 0
    return out


def test_prepare_reports_and_skips_corrupt_files(data16):
    ds = ImageDataset(data16)
    assert len(ds) == 12 and ds.images.shape == (12, 16, 16, 3)
    assert [s["file"] for s in ds.index["skipped"]] == ["corrupt.png"]


def test_prepare_from_tar_with_labels(tmp_path):
    photos = make_photos(tmp_path / "p", n=6)
    with tarfile.open(tmp_path / "images.tar", "w") as tar:
        for p in sorted(photos.iterdir()):
            tar.add(p, arcname=p.name)
    rows = ["file,split,duplicate_of_earlier,age"]
    rows += [f"img{i:02d}.png,{'test' if i == 0 else 'train'},{1 if i == 1 else 0},{20 + i}" for i in range(6)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    prepare_dataset(tmp_path / "images.tar", tmp_path / "out", resolution=8, labels=tmp_path / "labels.csv",
                    split="train")
    ds = ImageDataset(tmp_path / "out")
    assert ds.names == ["img02.png", "img03.png", "img04.png", "img05.png"]  # no test split, no duplicate
    assert ds.labels[0]["age"] == "22"


def test_sampler_is_deterministic_and_covers_each_epoch(data16):
    ds = ImageDataset(data16)
    s = BatchSampler(len(ds), seed=3, mirror=True)
    first = np.concatenate([s.indices(c, 5) for c in range(0, 12, 5)])[:12]
    assert sorted(first.tolist()) == list(range(12))
    assert np.array_equal(BatchSampler(12, seed=3, mirror=True).indices(7, 5), s.indices(7, 5))
    assert torch.equal(load_batch(ds, s, 4, 4), load_batch(ds, BatchSampler(12, seed=3, mirror=True), 4, 4))
    assert load_batch(ds, s, 0, 4, resolution=8).shape == (4, 3, 8, 8)


def test_train_gan_resume_is_exact(data16, tmp_path):
    common = ["train-gan", "--data", str(data16), *GAN_ARGS]
    assert main([*common, "--run-dir", str(tmp_path / "a"), "--kimg", "0.024"]) == 0  # straight through
    assert main([*common, "--run-dir", str(tmp_path / "b"), "--kimg", "0.012"]) == 0  # half …
    assert main([*common, "--run-dir", str(tmp_path / "b"), "--kimg", "0.024", "--resume"]) == 0  # … then the rest
    a, b = load_pack(tmp_path / "a" / "pack"), load_pack(tmp_path / "b" / "pack")
    for k, v in a.generator.state_dict().items():
        assert torch.equal(v, b.generator.state_dict()[k]), k
    assert (tmp_path / "a" / "samples").is_dir() and (tmp_path / "a" / "log.jsonl").is_file()
    # a finished run is not started again by accident
    assert main([*common, "--run-dir", str(tmp_path / "a"), "--kimg", "0.024"]) == 2


GAN2_ARGS = ["--arch", "stylegan2", "--resolution", "16", "--w-dim", "16", "--fmaps-base", "64", "--fmaps-max", "16",
             "--mapping-layers", "2", "--batch", "4", "--r1-interval", "2", "--snapshot-kimg", "0.012", "--quiet"]


def test_train_stylegan2_resume_is_exact(data16, tmp_path):
    """train-gan --arch stylegan2: lazy R1 and path length in the 6 steps, resumed halfway = straight through."""
    common = ["train-gan", "--data", str(data16), *GAN2_ARGS]
    assert main([*common, "--run-dir", str(tmp_path / "a"), "--kimg", "0.024"]) == 0
    assert main([*common, "--run-dir", str(tmp_path / "b"), "--kimg", "0.012"]) == 0
    assert main([*common, "--run-dir", str(tmp_path / "b"), "--kimg", "0.024", "--resume"]) == 0
    a = load_pack(tmp_path / "a" / "pack", with_discriminator=True)
    b = load_pack(tmp_path / "b" / "pack", with_discriminator=True)
    assert a.generator.kind == "stylegan2" and a.config["discriminator_kind"] == "stylegan2"
    for name in ("generator", "discriminator"):
        theirs = getattr(b, name).state_dict()
        for k, v in getattr(a, name).state_dict().items():
            assert torch.equal(v, theirs[k]), f"{name}.{k}"
    assert a.generator.mapping.w_avg.abs().sum() > 0  # w_avg is tracked
    log = json.loads((tmp_path / "a" / "log.jsonl").read_text().splitlines()[0])
    assert {"d_loss", "r1", "g_loss", "pl", "pl_mean"} <= set(log)
    # an unfinished StyleGAN2 run exports like any other
    assert main(["export", str(tmp_path / "b"), "--out", str(tmp_path / "exported"), "--quiet"]) == 0
    exported = load_pack(tmp_path / "exported")
    for k, v in b.generator.state_dict().items():
        assert torch.equal(v, exported.generator.state_dict()[k]), k
    # a batch the minibatch-std groups cannot divide is refused before training
    assert main(["train-gan", "--data", str(data16), *GAN2_ARGS, "--batch", "6", "--run-dir", str(tmp_path / "c"),
                 "--kimg", "0.012"]) == 2


def test_nan_stops_without_touching_the_weights():
    from idinvert.networks.config import DiscriminatorConfig, GeneratorConfig
    from idinvert.training.gan import GANTrainConfig, GANTrainer

    g = GeneratorConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=1, mapping_fmaps=8, fmaps_base=32, fmaps_max=8)
    trainer = GANTrainer(GANTrainConfig(generator=g, discriminator=DiscriminatorConfig(resolution=16, fmaps_base=32,
                                                                                      fmaps_max=8)))
    before = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    with pytest.raises(NonFiniteError, match="d_loss"):
        trainer.train_step(torch.full((4, 3, 16, 16), float("nan")), lod=0.0)
    assert all(torch.equal(v, trainer.D.state_dict()[k]) for k, v in before.items())


def test_max_minutes_stops_a_run_that_checkpoints_more_often(tmp_path):
    """--max-minutes counts from the start of the chunk, not from the last periodic checkpoint."""
    from idinvert.parallel import Distributed
    from idinvert.training.runner import RunOptions, run_training

    class Toy:  # a trainer whose step takes 20 ms
        images_seen = step_index = 0

        def state_dict(self) -> dict:
            return {"images_seen": self.images_seen, "step_index": self.step_index}

        def load_state_dict(self, state: dict) -> None:
            self.images_seen, self.step_index = state["images_seen"], state["step_index"]

    toy = Toy()

    def step() -> dict[str, float]:
        time.sleep(0.02)
        toy.images_seen += 1
        toy.step_index += 1
        return {"loss": 0.0}

    options = RunOptions(run_dir=tmp_path / "run", total_images=2_000, checkpoint_minutes=0.0,
                         max_minutes=0.5 / 60, quiet=True)  # a checkpoint after every step, stop after 0.5 s
    outcome = run_training(toy, step, options, config={"kind": "toy"}, world=Distributed())
    assert outcome.interrupted and not outcome.finished
    assert 5 <= toy.images_seen < 200  # about 25 steps; before the fix it ran to the total


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_resume_continues(data16, tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "idinvert", "train-gan", "--data", str(data16), *GAN_ARGS, "--run-dir", str(run),
            "--kimg", "100"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "log.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    seen = state["trainer"]["images_seen"]
    assert seen > 0
    assert main(["train-gan", "--data", str(data16), *GAN_ARGS, "--run-dir", str(run), "--kimg",
                 str((seen + 8) / 1000), "--resume"]) == 0
    assert (run / "pack" / "generator.safetensors").is_file()


@pytest.mark.slow
def test_encoders_train_and_invert(data16, tmp_path):
    assert main(["train-gan", "--data", str(data16), *GAN_ARGS, "--run-dir", str(tmp_path / "gan"),
                 "--kimg", "0.016"]) == 0
    base = ["--batch", "4", "--kimg", "0.012", "--channels-base", "4", "--channels-max", "16", "--quiet",
            "--snapshot-kimg", "0.008"]
    assert main(["train-encoder", "--pack", str(tmp_path / "gan" / "pack"), "--data", str(data16),
                 "--run-dir", str(tmp_path / "enc"), *base]) == 0
    assert main(["train-conventional", "--pack", str(tmp_path / "enc" / "pack"), "--run-dir", str(tmp_path / "conv"),
                 *base]) == 0
    pack = load_pack(tmp_path / "conv" / "pack", with_discriminator=True)
    assert pack.encoder is not None and pack.conventional_encoder is not None and pack.discriminator is not None
    log = [json.loads(line) for line in (tmp_path / "enc" / "log.jsonl").read_text().splitlines()]
    assert {"pix", "vgg", "adv", "d_loss", "r1", "lr"} <= set(log[-1])
    # --warm-start: E starts as the conventional encoder (a 0-image run saves it untouched) ...
    assert main(["train-encoder", "--pack", str(tmp_path / "conv" / "pack"), "--data", str(data16), "--warm-start",
                 "--run-dir", str(tmp_path / "warm"), *base[:2], "--kimg", "0", *base[4:]]) == 0
    warm = load_pack(tmp_path / "warm" / "pack").encoder.state_dict()
    for key, value in pack.conventional_encoder.state_dict().items():
        assert torch.equal(warm[key], value), key
    # ... and needs one
    assert main(["train-encoder", "--pack", str(tmp_path / "gan" / "pack"), "--data", str(data16), "--warm-start",
                 "--run-dir", str(tmp_path / "cold"), *base]) != 0
    # --warm-start encoder continues the pack's domain-guided encoder; several --data folders are read as one
    assert main(["train-encoder", "--pack", str(tmp_path / "conv" / "pack"), "--data", str(data16), str(data16),
                 "--warm-start", "encoder", "--run-dir", str(tmp_path / "more"), *base[:2], "--kimg", "0",
                 *base[4:]]) == 0
    more = load_pack(tmp_path / "more" / "pack").encoder.state_dict()
    for key, value in pack.encoder.state_dict().items():
        assert torch.equal(more[key], value), key
    record = json.loads((tmp_path / "more" / "train_config.json").read_text())
    assert record["data"] == [str(data16)] * 2 and record["warm_start"] == "encoder"
    assert main(["train-encoder", "--pack", str(tmp_path / "gan" / "pack"), "--data", str(data16), "--warm-start",
                 "encoder", "--run-dir", str(tmp_path / "cold2"), *base]) != 0
    photo = next((data16.parent / "photos").glob("img00.png"))
    out = tmp_path / "inv"
    assert main(["invert", str(photo), "--model", str(tmp_path / "conv" / "pack"), "--method", "conventional",
                 "--out", str(out), "--quiet"]) == 0
    assert np.load(out / "codes.npy").shape == (1, 6, 16)
    # an unfinished run can be exported too
    assert main(["export", str(tmp_path / "enc"), "--out", str(tmp_path / "exported"), "--quiet"]) == 0
    assert load_pack(tmp_path / "exported").encoder is not None


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_data_parallel_matches_one_process(tmp_path):
    (tmp_path / "ddp").mkdir()
    (tmp_path / "one").mkdir()
    result = _torchrun(str(HERE / "ddp_worker.py"), str(tmp_path / "ddp"))
    assert result.returncode == 0, result.stderr[-3000:]
    single = subprocess.run([sys.executable, str(HERE / "ddp_worker.py"), str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    for kind in ("gan", "enc", "gan2"):
        r0 = torch.load(tmp_path / "ddp" / f"{kind}_rank0.pt", weights_only=True)
        r1 = torch.load(tmp_path / "ddp" / f"{kind}_rank1.pt", weights_only=True)
        one = torch.load(tmp_path / "one" / f"{kind}_rank0.pt", weights_only=True)
        for net in r0:
            for k, v in r0[net].items():
                assert torch.equal(v, r1[net][k]), f"ranks out of sync: {kind} {net}.{k}"
                # Adam steps of 2e-3 (GAN) / 1e-4 (encoder); 1e-7 also covers parameters whose true
                # gradient is zero (e.g. the bias before instance norm of the constant layer).
                assert torch.allclose(v.double(), one[net][k].double(), rtol=1e-6, atol=1e-7), f"{kind} {net}.{k}"


@pytest.mark.slow
def test_cli_under_torchrun_writes_one_pack(data16, tmp_path):
    result = _torchrun("-m", "idinvert", "train-gan", "--data", str(data16), *GAN_ARGS, "--run-dir",
                       str(tmp_path / "run"), "--kimg", "0.008", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_pack(tmp_path / "run" / "pack").generator.resolution == 16
