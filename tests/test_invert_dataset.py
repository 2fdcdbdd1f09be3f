"""Inverting a data set: streaming with bounded memory, resume after a kill or a stop, refusal of
changed settings, torchrun sharding equal to one process, and the verbs that read such a folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from idinvert.cli import main
from idinvert.engine.dataset_inversion import DatasetJob, Prefetcher, invert_dataset, resolve_lambda_vgg
from idinvert.images import unique_names
from idinvert.engine.inversion import InversionConfig
from idinvert.pack import load_pack

STEPS = ["--steps", "3"]


def make_photos(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(folder / f"p{i:02d}.png")
    return folder


def invert_cli(photos: Path, pack: Path, out: Path, *extra: str) -> int:
    return main(["invert", str(photos), "--model", str(pack), "--out", str(out), "--quiet", *extra])


class AliveCounter:
    """Counts the decoded images that are still referenced anywhere (freed tensors call back)."""

    def __init__(self) -> None:
        self.alive = self.peak = 0
        self.lock = threading.Lock()

    def track(self, images: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.alive += images.shape[0]
            self.peak = max(self.peak, self.alive)
        weakref.finalize(images, self._freed, images.shape[0])
        return images

    def _freed(self, n: int) -> None:
        with self.lock:
            self.alive -= n


def test_prefetcher_bounds_the_batches_alive_and_keeps_order():
    counter = AliveCounter()
    loader = Prefetcher([[i] for i in range(60)], lambda idx: counter.track(torch.full((1, 3, 4, 4), float(idx[0]))),
                        ahead=2)
    seen = []
    for indices, images in loader:
        time.sleep(0.002)  # a slow consumer: the loader runs ahead as far as it may
        seen.append(int(images[0, 0, 0, 0]))
        del images
    loader.close()
    assert seen == list(range(60))
    assert counter.peak <= 2 + 3  # ahead + consumed + decoding + the one handed over


def test_prefetcher_raises_a_decoding_error_in_the_consumer():
    def load(idx):
        if idx[0] == 2:
            raise ValueError("bad image 2")
        return torch.zeros(1, 3, 4, 4)

    loader = Prefetcher([[i] for i in range(5)], load, ahead=2)
    got = []
    with pytest.raises(ValueError, match="bad image 2"):
        for indices, images in loader:
            got.append(indices[0])
    loader.close()
    assert got == [0, 1]


@pytest.mark.parametrize("count", [6, 30])
def test_decoded_images_alive_do_not_grow_with_the_data_set(tiny_pack, tmp_path, count):
    counter = AliveCounter()
    sources = [tmp_path / f"img{i:03d}.png" for i in range(count)]  # never opened: the loader is injected
    job = DatasetJob(sources=sources, names=unique_names(sources), out=tmp_path / "out",
                     config=resolve_lambda_vgg(InversionConfig(steps=1), tiny_pack), batch_size=2, images=False,
                     ahead=2)
    gen = torch.Generator().manual_seed(0)
    load = lambda idx: counter.track(torch.rand(len(idx), 3, 32, 32, generator=gen) * 2 - 1)  # noqa: E731
    outcome = invert_dataset(tiny_pack, job, model={"name": "tiny"}, load=load)
    assert outcome.finished and outcome.inverted == count
    assert np.load(tmp_path / "out" / "codes.npy", mmap_mode="r").shape == (count, *tiny_pack.code_shape)
    assert counter.peak <= (job.ahead + 3) * job.batch_size  # the same bound for 6 and for 30 images
    assert counter.alive == 0


def test_stop_keeps_finished_batches_and_rerun_finishes_with_the_same_codes(tiny_pack_dir, tmp_path, capsys):
    photos = make_photos(tmp_path / "photos", 5)
    pack = load_pack(tiny_pack_dir)
    paths = sorted(photos.iterdir())
    job = DatasetJob(sources=paths, names=unique_names(paths), out=tmp_path / "out",
                     config=resolve_lambda_vgg(InversionConfig(steps=3), pack), batch_size=2)
    outcome = invert_dataset(pack, job, model={"name": "tiny", "path": str(tiny_pack_dir), "resolution": 32,
                                               "code_shape": [8, 32]}, stop=lambda: True)
    assert outcome.stopped and outcome.inverted == 2 and not (tmp_path / "out").exists()
    assert len(list(job.work.glob("shards/*.npz"))) == 1 and (job.work / "p00_inv.png").is_file()
    # the same command (the CLI) continues: only the 3 other images are inverted
    assert invert_cli(photos, tiny_pack_dir, tmp_path / "out", *STEPS, "--batch-size", "2") == 0
    assert not job.work.exists()
    reference = tmp_path / "ref"
    assert invert_cli(photos, tiny_pack_dir, reference, *STEPS, "--batch-size", "2") == 0
    np.testing.assert_allclose(np.load(tmp_path / "out" / "codes.npy"), np.load(reference / "codes.npy"),
                               rtol=0, atol=1e-6)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["names"] == ["p00", "p01", "p02", "p03", "p04"] and len(manifest["losses"]) == 5
    assert {p.name for p in (tmp_path / "out").glob("*_inv.png")} == {f"p0{i}_inv.png" for i in range(5)}


def test_resume_refuses_changed_settings(tiny_pack_dir, tmp_path, capsys):
    photos = make_photos(tmp_path / "photos", 3)
    pack = load_pack(tiny_pack_dir)
    paths = sorted(photos.iterdir())
    job = DatasetJob(sources=paths, names=unique_names(paths), out=tmp_path / "out",
                     config=resolve_lambda_vgg(InversionConfig(steps=3), pack))
    invert_dataset(pack, job, model=pack.identity(), stop=lambda: True)
    assert job.work.is_dir()
    capsys.readouterr()
    for changed in (["--steps", "4"], [*STEPS, "--lambda-dom", "1"], [*STEPS, "--no-images"]):
        assert invert_cli(photos, tiny_pack_dir, tmp_path / "out", *changed, "--resume") == 2
        err = capsys.readouterr().err
        assert "other settings" in err and err.count("\n") == 1
    assert len(list(job.work.glob("shards/*.npz"))) == 1  # nothing was thrown away
    # a finished folder: --resume with the same settings has nothing to do; with others it refuses
    assert invert_cli(photos, tiny_pack_dir, tmp_path / "out", *STEPS) == 0
    assert invert_cli(photos, tiny_pack_dir, tmp_path / "out", *STEPS, "--resume") == 0
    assert invert_cli(photos, tiny_pack_dir, tmp_path / "out", "--steps", "2", "--resume") == 2
    assert "other settings" in capsys.readouterr().err
    assert invert_cli(photos, tiny_pack_dir, tmp_path / "new", *STEPS, "--resume") == 2
    assert "holds earlier work to continue" in capsys.readouterr().err


def _shards(work: Path) -> list[Path]:
    return sorted((work / "shards").glob("*.npz")) if (work / "shards").is_dir() else []


def _wait_for_shards(process: subprocess.Popen, work: Path, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(_shards(work)) < count:
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_run_resumes_and_redoes_nothing_finished(tiny_pack_dir, tmp_path, capsys):
    photos = make_photos(tmp_path / "photos", 10)
    out, work = tmp_path / "out", tmp_path / ".out.partial"
    settings = ["--model", str(tiny_pack_dir), "--steps", "20", "--batch-size", "1"]
    command = [sys.executable, "-m", "idinvert", "invert", str(photos), *settings, "--out", str(out), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_shards(process, work, 2)
    process.kill()  # SIGKILL: no chance to clean up
    process.wait(timeout=60)
    # Ctrl-C: the run ends after the current batch, with status 130 and the work kept
    process = subprocess.Popen(command[:-1], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = len(_shards(work))
    _wait_for_shards(process, work, before + 1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "run the same command again" in err
    finished = len(_shards(work))
    assert before + 1 <= finished < 10 and not out.exists()
    capsys.readouterr()
    assert main(command[3:-1]) == 0  # the same command, in this process (not quiet: it reports)
    err = capsys.readouterr().err
    assert f"resuming: {finished} of 10 images are finished, {10 - finished} to go" in err
    assert f"({10 - finished} in this run" in err
    reference = tmp_path / "ref"
    assert main(["invert", str(photos), *settings, "--out", str(reference), "--quiet"]) == 0
    np.testing.assert_allclose(np.load(out / "codes.npy"), np.load(reference / "codes.npy"), rtol=0, atol=1e-6)
    assert json.loads((out / "manifest.json").read_text())["names"] == [f"p{i:02d}" for i in range(10)]


@pytest.mark.slow
def test_two_processes_under_torchrun_match_one(tiny_pack_dir, tmp_path):
    photos = make_photos(tmp_path / "photos", 7)
    args = [str(photos), "--model", str(tiny_pack_dir), *STEPS, "--batch-size", "2", "--device", "cpu", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "idinvert", "invert", *args, "--out", str(tmp_path / "two")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert main(["invert", *args, "--out", str(tmp_path / "one")]) == 0
    two, one = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("two", "one"))
    assert two["run"]["processes"] == 2 and one["run"]["processes"] == 1
    assert two["names"] == one["names"] == [f"p{i:02d}" for i in range(7)]
    for name in ("codes.npy", "encoder_codes.npy"):
        np.testing.assert_allclose(np.load(tmp_path / "two" / name), np.load(tmp_path / "one" / name),
                                   rtol=0, atol=1e-6)
    assert not (tmp_path / ".two.partial").exists()


def test_a_no_images_folder_feeds_the_other_verbs(tiny_pack_dir, tmp_path):
    from idinvert.evaluation.imageset import load_image_set

    photos = make_photos(tmp_path / "photos", 3)
    out = tmp_path / "codes_only"
    assert invert_cli(photos, tiny_pack_dir, out, *STEPS, "--no-images") == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        ["codes.npy", "encoder_codes.npy", "manifest.json"]
    codes = np.load(out / "codes.npy", mmap_mode="r")  # memory-mappable
    assert codes.shape == (3, 8, 32) and codes.dtype == np.float32
    assert main(["interpolate", str(out), str(out), "--model", str(tiny_pack_dir), "--steps", "1",
                 "--out", str(tmp_path / "interp"), "--quiet"]) == 0
    assert (tmp_path / "interp" / "codes.npy").is_file()
    images = load_image_set([str(out)], 32, None, None)  # evaluate --images OUT: the photos it inverted
    assert images.names == ["p00.png", "p01.png", "p02.png"] and images.images.shape == (3, 3, 32, 32)
    for p in photos.iterdir():
        p.unlink()
    assert main(["interpolate", str(out), str(out), "--model", str(tiny_pack_dir), "--out",
                 str(tmp_path / "interp2"), "--quiet"]) == 2  # the photos are gone: one line, no traceback


def test_train_boundary_fits_on_an_invert_folder(tiny_pack_dir, tmp_path, capsys):
    import shutil

    from idinvert.attributes import predictor_entry, save_predictor
    from idinvert.attributes.predictor import AttributePredictor, PredictorConfig
    from idinvert.pack import update_pack

    pack = tmp_path / "pack"
    shutil.copytree(tiny_pack_dir, pack)
    torch.manual_seed(0)
    predictor = AttributePredictor(PredictorConfig(resolution=32, binary=("Smiling",), channels=(8, 16))).eval()
    save_predictor(predictor, tmp_path / "predictor.safetensors")
    update_pack(pack, files={"attributes.safetensors": tmp_path / "predictor.safetensors"},
                config_updates={"predictor": predictor_entry(predictor)})
    photos = make_photos(tmp_path / "photos", 12)
    assert invert_cli(photos, pack, tmp_path / "inv", "--steps", "1", "--no-images") == 0
    capsys.readouterr()
    assert main(["train-boundary", "--model", str(pack), "--attribute", "smile", "--codes", str(tmp_path / "inv"),
                 "--keep", "0.25", "--search-samples", "8", "--layers", "0-3", "--out", str(tmp_path / "b.npy")]) == 0
    assert "the 12 codes of" in capsys.readouterr().err
    boundary = np.load(tmp_path / "b.npy", allow_pickle=True)[()]
    assert boundary["boundary"].shape == (1, 8, 32) and boundary["meta_data"]["samples"] == 12
