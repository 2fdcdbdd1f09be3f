"""`idinvert distill`: a StyleGAN or StyleGAN2 student learns a tiny teacher; checkpoints resume exactly."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from idinvert.cli import main
from idinvert.networks.config import GeneratorConfig
from idinvert.errors import ConfigError
from idinvert.networks import StyleGAN2Config
from idinvert.pack import load_pack, save_pack
from idinvert.perceptual import default_perceptual_config
from idinvert.training.common import load_checkpoint
from idinvert.training.distill import STUDENT_ARCHS, DistillConfig, DistillTrainer, student_config
from idinvert.training.drivers import distill_config_from_dict
from idinvert.fileio import json_ready
from test_dcgan import ReferenceDCGAN, load_dcgan_generator_from

STUDENT = ["--w-dim", "16", "--mapping-layers", "2", "--fmaps-base", "256", "--fmaps-max", "32", "--batch", "8",
           "--ema-kimg", "0.05", "--quiet"]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    """A tiny 16 px DCGAN teacher (z 16) with a framing, as a pack."""
    torch.manual_seed(0)
    ref = ReferenceDCGAN(16, [32, 16]).eval()
    smooth = torch.tensor([1.0, 3.0, 3.0, 1.0])
    for name, p in ref.named_parameters():
        if "convTr" in name:
            p.data.normal_(0, 0.3)
            if name != "convTr1.weight":  # smooth up-sampling kernels, as a trained generator's: images that
                # vary smoothly with z (a random DCGAN's pixel noise takes thousands of steps to learn)
                p.data = p.data.mean(dim=(2, 3), keepdim=True) * (smooth[:, None] * smooth[None]) / 4
    folder = tmp_path_factory.mktemp("teacher") / "teacher"
    framing = {"name": "t", "rule": "similarity", "size": 16, "eye_left": [0.4, 0.5], "eye_right": [0.6, 0.5],
               "mouth": [0.5, 0.75], "nose": None}
    save_pack(folder, name="teacher", generator=load_dcgan_generator_from(ref),
              perceptual_config=default_perceptual_config("torchvision"), extra_config={"framing": framing})
    return folder


def log_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("arch", STUDENT_ARCHS)
def test_the_student_learns_the_teacher(arch, teacher_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["distill", "--arch", arch, "--teacher", str(teacher_dir), "--run-dir", str(run), "--kimg", "1.6",
                 "--lr", "0.01", "--lambda-lpips", "0", "--snapshot-kimg", "0.6", *STUDENT]) == 0
    log = log_of(run)
    assert log[-1]["l1"] < 0.9 * log[0]["l1"] and "mix" in log[-1]
    pack = load_pack(run / "pack")
    assert pack.name == f"teacher-{arch}" and pack.config["generator_kind"] == pack.generator.kind == arch
    assert pack.code_shape == (6, 16) and pack.generator.z_dim == 16
    assert pack.config["framing"]["eye_left"] == [0.4, 0.5]  # the teacher's framing travels with the student
    teacher = load_pack(teacher_dir).generator
    z = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = teacher.synthesize(teacher.sample_codes(z))
        student = pack.generator.synthesize(pack.generator.sample_codes(z, truncation_psi=1.0))
    # z is used: the student's images vary with z as the teacher's do, and beat their own average
    t, s = target - target.mean(0), student - student.mean(0)
    assert (t * s).sum() / (t.norm() * s.norm()) > 0.2
    assert (student - target).abs().mean() < (student.mean(0, keepdim=True) - target).abs().mean()
    assert len(list((run / "samples").glob("*.png"))) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("arch", STUDENT_ARCHS)
def test_resume_continues_exactly_and_lpips_and_adversarial_phase_run(arch, teacher_dir, tmp_path):
    from PIL import Image
    import numpy as np

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    assert main(["prepare-data", str(photos), "--out", str(tmp_path / "data"), "--resolution", "16", "--quiet"]) == 0
    common = ["--arch", arch, "--teacher", str(teacher_dir), "--kimg", "0.008", "--adv-kimg", "0.16",
              "--data", str(tmp_path / "data"), "--snapshot-kimg", "0.08", *STUDENT]
    assert main(["distill", *common, "--run-dir", str(tmp_path / "straight")]) == 0
    assert main(["distill", *common, "--run-dir", str(tmp_path / "chunked"), "--max-minutes", "0"]) == 0
    first = load_checkpoint(tmp_path / "chunked" / "checkpoint.pt")["trainer"]["images_seen"]
    assert 0 < first < 168
    assert main(["distill", *common, "--run-dir", str(tmp_path / "chunked"), "--resume"]) == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["trainer"]
    b = load_checkpoint(tmp_path / "chunked" / "checkpoint.pt")["trainer"]
    assert a["images_seen"] == b["images_seen"] == 168
    for net in ("S", "Ss", "D"):
        for key, value in a[net].items():
            assert torch.equal(value, b[net][key]), (net, key)
    log = log_of(tmp_path / "straight")
    assert "lpips" in log[0] and "g_adv" not in log[0]  # step 1: regression only
    assert {"lpips", "g_adv", "d_loss", "r1"} <= set(log[-1])  # step 20: the adversarial phase
    assert load_pack(tmp_path / "straight" / "pack", with_discriminator=True).discriminator is not None
    # the adversarial phase needs photos: one line, exit 2
    assert main(["distill", "--teacher", str(teacher_dir), "--kimg", "0", "--adv-kimg", "0.008",
                 "--run-dir", str(tmp_path / "nodata"), *STUDENT]) == 2


def test_an_exported_stylegan2_student_is_the_ema_student(teacher_dir, tmp_path):
    """``idinvert export`` of an unfinished run and the finished run's pack: kind stylegan2, the EMA
    student's images."""
    run = tmp_path / "run"
    args = ["distill", "--arch", "stylegan2", "--teacher", str(teacher_dir), "--kimg", "0.04", "--lambda-lpips", "0",
            "--run-dir", str(run), *STUDENT]
    z = torch.randn(6, 16, generator=torch.Generator().manual_seed(3))

    def ema_student_images() -> torch.Tensor:
        record = json.loads((run / "train_config.json").read_text())
        for key in ("kind", "teacher", "data"):
            record.pop(key)
        trainer = DistillTrainer(distill_config_from_dict(record), load_pack(teacher_dir).generator)
        trainer.load_state_dict(load_checkpoint(run / "checkpoint.pt")["trainer"])
        with torch.no_grad():
            return trainer.Ss.synthesize(trainer.Ss.sample_codes(z, truncation_psi=1.0))

    def pack_images(folder: Path) -> torch.Tensor:
        pack = load_pack(folder)
        assert pack.config["generator_kind"] == pack.generator.kind == "stylegan2"
        with torch.no_grad():
            return pack.generator.synthesize(pack.generator.sample_codes(z, truncation_psi=1.0))

    assert main([*args, "--max-minutes", "0"]) == 0  # stops with a checkpoint after its first step
    assert 0 < load_checkpoint(run / "checkpoint.pt")["trainer"]["images_seen"] < 40
    assert main(["export", str(run), "--out", str(tmp_path / "early"), "--quiet"]) == 0
    assert torch.equal(pack_images(tmp_path / "early"), ema_student_images())
    without_arch = [a for a in args if a not in ("--arch", "stylegan2")]  # --resume keeps the run's own arch
    assert main([*without_arch, "--resume"]) == 0
    assert torch.equal(pack_images(run / "pack"), ema_student_images())


def test_train_config_records_round_trip_and_old_ones_load_a_stylegan_student():
    for arch in STUDENT_ARCHS:
        config = DistillConfig(arch=arch, student=student_config(arch, resolution=16, z_dim=16))
        record = json.loads(json.dumps(json_ready(dataclasses.asdict(config))))
        assert distill_config_from_dict(record) == config
    old = json_ready(dataclasses.asdict(DistillConfig()))
    del old["arch"]  # records written before students could be StyleGAN2s
    assert distill_config_from_dict(old) == DistillConfig()
    assert isinstance(DistillConfig(arch="stylegan2").student, StyleGAN2Config)
    with pytest.raises(ConfigError, match="matches arch"):
        DistillConfig(arch="stylegan2", student=GeneratorConfig(resolution=16))
    # the resolution each W+ row acts at (the mixing term's low-pass): StyleGAN2 rows 2i − 1, 2i drive the
    # conv0 (upsampling to 2^(i+2)) and conv1 of block i, the last row only the final toRGB
    assert [StyleGAN2Config(resolution=64).layer_resolution(i) for i in range(10)] == [4, 8, 8, 16, 16, 32, 32,
                                                                                        64, 64, 64]
    assert [GeneratorConfig(resolution=64).layer_resolution(i) for i in range(10)] == [4, 4, 8, 8, 16, 16, 32,
                                                                                       32, 64, 64]


@pytest.mark.slow
def test_data_parallel_distillation_matches_one_process(tmp_path):
    """Two gloo processes and one process, float64, the same global batches: the same student, of
    either kind (both trained in the same processes, which saves a second start of three)."""
    worker = str(Path(__file__).parent / "distill_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for folder, cmd in (("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 "--nproc_per_node=2", worker]), ("one", [sys.executable, worker])):
        (tmp_path / folder).mkdir()
        done = subprocess.run([*cmd, str(tmp_path / folder)], capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    for arch in STUDENT_ARCHS:
        r0, r1, one = (torch.load(tmp_path / f / f"distill_{arch}_rank{r}.pt", weights_only=True)
                       for f, r in (("two", 0), ("two", 1), ("one", 0)))
        for net in r0:
            for key, value in r0[net].items():
                assert torch.equal(value, r1[net][key]), f"{arch}: ranks out of sync: {net}.{key}"
                assert torch.allclose(value, one[net][key], rtol=1e-6, atol=1e-7), f"{arch}: {net}.{key}"


@pytest.mark.slow
def test_cli_under_torchrun_writes_one_pack(teacher_dir, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "idinvert", "distill", "--teacher", str(teacher_dir), "--kimg", "0.016",
                           "--lambda-lpips", "0", "--run-dir", str(tmp_path / "run"), *STUDENT],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_pack(tmp_path / "run" / "pack").generator.kind == "stylegan"
