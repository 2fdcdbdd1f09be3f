"""The findings of the hostile pass (issue 27), each made into a test from its reproduction, closed at the
shared rule it slipped past (``docs/security.md`` lists them): the one bounded reader of pickles and torch
files, the output-folder rule for run folders, one-line errors for damaged files and full disks, the
decode budget and the editor's Origin check. Every crafted file is made here, in ``tmp_path``."""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from idinvert import images, safety
from idinvert.boundaries import load_boundary
from idinvert.cli import main
from idinvert.errors import BoundaryError, CheckpointError, ImageError, OutputError
from idinvert.fileio import StagedOutput, atomic_path
from idinvert.formats.common import read_state_dict
from idinvert.formats.stylegan2 import load_stylegan2
from idinvert.training.common import Distributed, load_checkpoint
from idinvert.training.runner import RunOptions, run_training

from test_distill import teacher_dir  # noqa: F401 (a fixture)
from test_stylegan2 import _Record, fake_persistence  # noqa: F401 (a fixture)


def shared_tuple_dict(levels: int = 40) -> bytes:
    """A pickle of ``{T: 1}`` where T holds the same tuple twice, ``levels`` deep: 2^levels nodes in a
    few hundred bytes. Building it is cheap; hashing T (as a dict key) or printing it never ends."""
    out = bytearray(b"\x80\x04}")  # PROTO 4, EMPTY_DICT
    out += b")\x940"  # EMPTY_TUPLE, MEMOIZE (memo 0), POP
    for i in range(levels):  # BINGET i twice, TUPLE2, MEMOIZE, POP
        out += b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86\x940"
    out += b"h" + bytes([levels]) + b"K\x01s."  # BINGET the last, BININT1 1, SETITEM, STOP
    return bytes(out)


def with_data_pkl(path: Path, data: bytes) -> Path:
    """A torch.save zip file whose data.pkl is replaced by ``data``."""
    torch.save({"g_ema": {}}, path)
    with zipfile.ZipFile(path) as src:
        members = [(m, src.read(m)) for m in src.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for member, content in members:
            dst.writestr(member, data if member.filename.endswith("/data.pkl") else content)
    return path


def object_npy(path: Path, pickled: bytes) -> Path:
    """An ``.npy`` file whose header says 'a 0-d object array' and whose body is ``pickled``."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(pickled)
    return path


# --- one bounded reader for every pickle, npy and torch file ---------------------------------------------------
def test_a_tiny_shared_reference_pickle_is_refused_before_anything_hashes_it(tmp_path):
    bomb = shared_tuple_dict(40)
    assert len(bomb) < 400
    (tmp_path / "snapshot.pkl").write_bytes(bomb)  # convert --stylegan2 (NVIDIA)
    with pytest.raises(CheckpointError, match="shared object") as exc:
        load_stylegan2(tmp_path / "snapshot.pkl")
    assert "\n" not in str(exc.value)
    checkpoint = with_data_pkl(tmp_path / "ros.pt", bomb)  # rosinality conversion, distill --resume
    with pytest.raises(CheckpointError, match="shared object"):
        load_stylegan2(checkpoint)
    with pytest.raises(CheckpointError, match="shared object"):
        load_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match="shared object"):
        read_state_dict(checkpoint)  # official and DCGAN weight files
    with pytest.raises(BoundaryError, match="shared object|nested deeper"):  # edit --boundary
        load_boundary(object_npy(tmp_path / "b.npy", bomb), (4, 8))


def test_odd_values_in_snapshot_records_are_never_printed_whole(tmp_path, fake_persistence):
    nested = []
    for _ in range(30):  # a class name of 2³⁰ shared lists: str() of it was 830 MB at 2²⁵
        nested = [nested, nested]
    meta = {"type": "class", "version": 6, "module_src": "", "class_name": nested, "state": {}}
    (tmp_path / "s.pkl").write_bytes(pickle.dumps({"G_ema": _Record(meta)}, protocol=4))
    with pytest.raises(CheckpointError, match="shared object"):
        load_stylegan2(tmp_path / "s.pkl")
    meta["class_name"] = [[["Generator"]]]  # small, but not a name
    (tmp_path / "s2.pkl").write_bytes(pickle.dumps({"G_ema": _Record(meta)}, protocol=4))
    with pytest.raises(CheckpointError, match="class name or source is not a short string"):
        load_stylegan2(tmp_path / "s2.pkl")


@pytest.mark.parametrize("make,kind", [(lambda t: t.to_sparse(), "sparse_coo"),
                                       (lambda t: t.to(torch.float8_e5m2), "float8_e5m2"),
                                       (lambda t: torch.empty(t.shape, device="meta"), "meta")])
def test_dcgan_state_dicts_with_odd_tensors_get_one_line(tmp_path, make, kind, capsys):
    state = {"convTr1.weight": torch.randn(8, 4, 4, 4), "convTr2.weight": torch.randn(4, 3, 4, 4),
             "batchNorm1.weight": torch.ones(4)}
    state["batchNorm1.weight"] = make(state["batchNorm1.weight"])
    torch.save(state, tmp_path / "g.pt")
    assert main(["convert", "--dcgan", str(tmp_path / "g.pt"), "--out", str(tmp_path / "pack")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("idinvert: error:") and "\n" not in err and f"{kind} tensor" in err


# --- run folders: the output-folder rule -----------------------------------------------------------------------
class Counter:
    """The smallest trainer ``run_training`` drives: it counts images."""

    def __init__(self) -> None:
        self.images_seen = self.step_index = 0

    def state_dict(self) -> dict:
        return {"images_seen": self.images_seen, "step_index": self.step_index}

    def load_state_dict(self, state: dict) -> None:
        self.images_seen, self.step_index = int(state["images_seen"]), int(state["step_index"])

    def step(self) -> dict[str, float]:
        self.images_seen += 1
        self.step_index += 1
        return {"loss": 0.0}


def test_a_run_folder_is_never_an_unrelated_folder_or_an_input(tmp_path):
    user = tmp_path / "d"
    (user / "samples").mkdir(parents=True)
    (user / "train_config.json").write_text("my notes")
    (user / "samples" / "000000004.png").write_bytes(b"my picture")
    trainer = Counter()
    with pytest.raises(OutputError, match="did not write"):
        run_training(trainer, trainer.step, RunOptions(run_dir=user, total_images=4, quiet=True),
                     config={"kind": "toy"}, world=Distributed())
    assert (user / "train_config.json").read_text() == "my notes"
    assert (user / "samples" / "000000004.png").read_bytes() == b"my picture"
    assert sorted(p.name for p in user.rglob("*")) == ["000000004.png", "samples", "train_config.json"]
    data = tmp_path / "data"  # a prepared data set is an idinvert folder, but this run reads it
    data.mkdir()
    safety.mark_output_dir(data)
    with pytest.raises(OutputError, match="also an input"):
        run_training(trainer, trainer.step, RunOptions(run_dir=data, total_images=4, quiet=True),
                     config={"kind": "toy", "data": str(data)}, world=Distributed())
    run = tmp_path / "run"  # a new folder becomes idinvert's: the run and its resume are accepted
    assert run_training(trainer, trainer.step, RunOptions(run_dir=run, total_images=4, quiet=True),
                        config={"kind": "toy"}, world=Distributed()).finished
    assert (run / safety.MARKER).is_file()
    os.remove(run / safety.MARKER)  # a run folder of an earlier version (no marker) still resumes
    again = Counter()
    outcome = run_training(again, again.step, RunOptions(run_dir=run, total_images=8, resume=True, quiet=True),
                           config={"kind": "toy"}, world=Distributed())
    assert outcome.finished and outcome.images_seen == 8


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_training_with_the_documented_status(tmp_path, signum, status):
    trainer = Counter()

    def step():
        if trainer.images_seen == 2:
            os.kill(os.getpid(), signum)
        return trainer.step()

    outcome = run_training(trainer, step, RunOptions(run_dir=tmp_path / "run", total_images=100, quiet=True),
                           config={"kind": "toy"}, world=Distributed())
    assert outcome.by_signal and not outcome.finished and outcome.exit_status == status


# --- full disks and long names ---------------------------------------------------------------------------------
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    def full(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OutputError, match="No space left"):
        with atomic_path(tmp_path / "codes.npy") as tmp:
            tmp.write_bytes(b"half")
            full()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="No space left"):
        with StagedOutput(tmp_path / "out") as stage:
            stage.file("a.png").write_bytes(b"half")
            full()
    assert list(tmp_path.iterdir()) == []


def test_an_output_name_of_250_characters_stages_beside_itself(tmp_path):
    out = tmp_path / ("o" * 250)
    with StagedOutput(out) as stage:
        stage.file("a.txt").write_text("x")
        assert len(stage.path.name) < 255
    assert (out / "a.txt").read_text() == "x"
    with atomic_path(tmp_path / ("f" * 250)) as tmp:
        assert len(tmp.name) < 255
        tmp.write_text("y")


# --- decoding images -------------------------------------------------------------------------------------------
def png16(path: Path, side: int) -> Path:
    """A flat 16-bit grey PNG: 95 KB on disk for 7000 × 7000, 98 MB decoded."""
    import struct
    import zlib

    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + side * 2)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.mark.slow
def test_a_small_16_bit_png_decodes_within_a_bounded_memory(tmp_path):
    """The 16-bit conversion runs a band of rows at a time: under a 1.3 GB address-space limit (the
    float64 conversion of the whole image needed 1.6 GB at peak) the photo reads."""
    path = png16(tmp_path / "big.png", 7000)
    assert path.stat().st_size < 100_000
    limit = int(1.3 * 1024**3)
    code = f"from idinvert.images import read_image; print(tuple(read_image({str(path)!r}, 32).shape))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert result.returncode == 0 and "(3, 32, 32)" in result.stdout, result.stderr[-2000:]


def test_concurrent_decodes_share_one_budget(tmp_path):
    budget = images.DecodeBudget(limit=10_000_000)
    path = png16(tmp_path / "p.png", 600)  # 0.36 MP: 4.7 MB of budget
    held = threading.Event()
    release = threading.Event()

    def hold():
        with budget.reserve(8_000_000, "another photo"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    try:
        with pytest.raises(images.DecodeBusy, match="try again"):
            budget_wait = images.DECODE_WAIT_SECONDS
            images.DECODE_WAIT_SECONDS = 0.05
            try:
                images.decode_image(path, budget=budget)
            finally:
                images.DECODE_WAIT_SECONDS = budget_wait
    finally:
        release.set()
        thread.join()
    assert images.decode_image(path, budget=budget).size == (600, 600) and budget.used == 0
    with pytest.raises(ImageError, match="over the limit"):
        images.decode_image(png16(tmp_path / "q.png", 1200), budget=budget)


# --- names from files ------------------------------------------------------------------------------------------
def _photo(path: Path, seed: int) -> Path:
    from PIL import Image

    array = (np.random.default_rng(seed).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(array).save(path)
    return path


def test_tuning_an_invert_folder_checks_the_names_of_its_manifest(tiny_pack_dir, tmp_path):
    """``invert --refine pti`` on a finished folder whose manifest names ``../esc_a``: refused before any
    file is written (it wrote ../esc_a_pti.png and ../esc_a_tuned.safetensors)."""
    from idinvert.engine.invert_folder import tune_folder
    from idinvert.engine.refine import RefineConfig
    from idinvert.pack import load_pack

    out = tmp_path / "work" / "inv"
    photos = [_photo(tmp_path / "a.png", 1), _photo(tmp_path / "b.png", 2)]
    assert main(["invert", *map(str, photos), "--model", str(tiny_pack_dir), "--out", str(out), "--method",
                 "encoder", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["names"] = ["../esc_a", "b"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = sorted(p.name for p in (tmp_path / "work").iterdir())
    with pytest.raises(Exception, match="not a plain file name") as exc:
        tune_folder(out, load_pack(tiny_pack_dir), RefineConfig(steps=1), batch_size=2)
    assert "\n" not in str(exc.value)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == before


def test_names_never_start_with_a_dash():
    assert safety.safe_name("-rf") == "rf" and safety.safe_name("--") == "image" and safety.safe_name("a-") == "a-"
    assert safety.unique_names(["-rf", "rf"]) == ["rf", "rf_2"]
    with pytest.raises(Exception, match="not a plain file name"):
        safety.check_names(["-rf"], "manifest.json")


# --- tuned weights ---------------------------------------------------------------------------------------------
def test_damaged_tuned_files_are_blamed_on_themselves_in_one_line(tiny_pack_dir, tmp_path):
    from safetensors.torch import save_file

    from idinvert.engine.tuned import TUNED_FORMAT, fingerprint, load_tuned, save_tuned, tunable_names
    from idinvert.pack import load_pack

    generator = load_pack(tiny_pack_dir).generator
    name = tunable_names(generator)[0]
    shape = dict(generator.named_parameters())[name].shape
    good = tmp_path / "good.safetensors"
    save_tuned(good, {name: torch.full(shape, 0.01)}, base=fingerprint(generator))
    assert load_tuned([good], generator).changed().tolist() == [True]
    cases = {"abc": ({name: torch.zeros(shape)}, "abc", "not an idinvert tuned-weights file"),
             "nan": ({name: torch.full(shape, float("nan"))}, "1", "damaged"),
             "int": ({name: torch.ones(shape, dtype=torch.int32)}, "1", "damaged")}
    for label, (tensors, version, message) in cases.items():
        path = tmp_path / f"{label}.safetensors"
        save_file(tensors, str(path), metadata={"format": TUNED_FORMAT, "format_version": version,
                                                "base": fingerprint(generator)})
        with pytest.raises(CheckpointError, match=message) as exc:
            load_tuned([path], generator)
        assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_a_full_disk_in_any_writer_is_one_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    """A writer outside the atomic helpers (here export-rosinality's) hitting ENOSPC: exit 2, one line."""
    from conftest import shared_data

    import idinvert.cli.convert as convert

    snapshot = shared_data("stylegan2-fixtures", "sg2ada-tiny32.pkl")
    assert main(["convert", "--stylegan2", str(snapshot), "--out", str(tmp_path / "pack"), "--quiet"]) == 0

    def full(generator, path, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(convert, "save_rosinality", full)
    assert main(["export-rosinality", str(tmp_path / "pack"), "--out", str(tmp_path / "g.pt"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("idinvert: error: cannot write") and "No space left" in err and "\n" not in err


# --- evaluate --resume caches ----------------------------------------------------------------------------------
def test_a_damaged_evaluation_cache_is_recomputed_and_a_linked_one_refused(tmp_path):
    from idinvert.evaluation.cache import FolderCache

    cache = FolderCache(tmp_path / "cache", reuse=True)
    cache.store("recon", "f1", {"lpips": 0.25, "codes": torch.ones(2, 3)})
    entry = cache.load("recon", "f1")
    assert entry["lpips"] == 0.25 and torch.equal(entry["codes"], torch.ones(2, 3))
    meta = tmp_path / "cache" / "recon.json"
    for damage in ("[" * 100_000 + "]" * 100_000, '{"fingerprint": "f1", "value": [1, 2]}', '["f1"]',
                   '{"fingerprint": "f1", "value": {}, "tensors": ["other"]}', '{"fingerprint": "f1", "value": {"a": 1'):
        meta.write_text(damage)
        assert cache.load("recon", "f1") is None  # recomputed, never a traceback
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "cache").symlink_to(outside)
    with pytest.raises(OutputError, match="symbolic link"):
        FolderCache(tmp_path / "out" / "cache", reuse=True)


# --- directions --add-to-pack ----------------------------------------------------------------------------------
def test_directions_never_add_to_the_installed_pack(tmp_path, capsys):
    from idinvert.pack import bundled_pack_dir

    config = bundled_pack_dir() / "config.json"
    before = config.read_bytes()
    assert main(["directions", "--method", "sefa", "--model", "default", "--add-to-pack", "--out", str(tmp_path / "d"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "installed with idinvert" in err and "\n" not in err
    assert config.read_bytes() == before and not (tmp_path / "d").exists()


# --- training run folders: --resume and export -----------------------------------------------------------------
def _tamper(run: Path, variant: str) -> None:
    ckpt, config = run / "checkpoint.pt", run / "train_config.json"
    if variant == "empty":
        ckpt.write_bytes(b"")
    elif variant == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif variant == "text":
        ckpt.write_text("not a checkpoint")
    elif variant == "shared_pickle":
        with_data_pkl(ckpt, shared_tuple_dict(40))
    elif variant == "config_deep":
        config.write_text("[" * 100_000 + "]" * 100_000)
    elif variant == "config_list":
        config.write_text("[1, 2]")
    else:
        state = torch.load(ckpt, weights_only=True)
        trainer = state["trainer"]
        if variant == "list":
            state = [1, 2]
        elif variant == "no_trainer":
            del state["trainer"]
        elif variant == "missing_part":
            del trainer["S"]
        elif variant == "wrong_shape":
            key = next(k for k, v in trainer["S"].items() if v.ndim == 2)
            trainer["S"][key] = torch.zeros(3, 3)
        elif variant == "nan":
            key = next(k for k, v in trainer["S"].items() if v.is_floating_point())
            trainer["S"][key] = torch.full_like(trainer["S"][key], float("nan"))
        elif variant == "optimiser":
            slot = next(iter(trainer["opt_S"]["state"].values()))
            slot["exp_avg"] = torch.zeros(7)
        elif variant == "counter":
            trainer["images_seen"] = "many"
        torch.save(state, ckpt)


RUN_VARIANTS = ["empty", "truncated", "text", "shared_pickle", "config_deep", "config_list", "list", "no_trainer",
                "missing_part", "wrong_shape", "nan", "optimiser", "counter"]


@pytest.fixture(scope="module")
def distill_run(teacher_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    """A distillation run stopped after its first step (with a checkpoint), and its command line."""
    from test_distill import STUDENT

    run = tmp_path_factory.mktemp("distill") / "run"
    args = ["distill", "--teacher", str(teacher_dir), "--kimg", "0.04", "--lambda-lpips", "0", "--run-dir", str(run),
            *STUDENT]
    assert main([*args, "--max-minutes", "0"]) == 0
    return run, args


@pytest.mark.slow
def test_resume_and_export_of_a_tampered_run_folder_are_one_line(distill_run, tmp_path, capsys):
    run, args = distill_run
    assert main(["export", str(run), "--out", str(tmp_path / "intact-pack"), "--quiet"]) == 0  # the untouched run
    capsys.readouterr()
    for variant in RUN_VARIANTS:
        copy = tmp_path / variant
        shutil.copytree(run, copy)
        _tamper(copy, variant)
        command = [a if a != str(run) else str(copy) for a in args]
        for argv in ([*command, "--resume"], ["export", str(copy), "--out", str(tmp_path / f"{variant}-pack")]):
            assert main(argv) == 2, (variant, argv[0])
            err = capsys.readouterr().err.strip()
            assert err.startswith("idinvert: error:") and "\n" not in err, (variant, argv[0], err)
            assert not (tmp_path / f"{variant}-pack").exists()


# --- data-set shards -------------------------------------------------------------------------------------------
def _npz_member_claiming(shape: tuple[int, ...]) -> bytes:
    """An .npy member whose header claims ``shape`` of float32 but holds 16 bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\0" * 16


def _tamper_shard(shard: Path, variant: str) -> None:
    if variant == "empty":
        shard.write_bytes(b"")
    elif variant == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif variant == "huge_header":  # 'codes' claims 20 GiB
        with zipfile.ZipFile(shard) as src:
            members = {m.filename: src.read(m) for m in src.infolist()}
        members["codes.npy"] = _npz_member_claiming((5_000_000, 8, 128))
        with zipfile.ZipFile(shard, "w", zipfile.ZIP_STORED) as dst:
            for name, data in members.items():
                dst.writestr(name, data)
    else:
        with np.load(shard) as data:
            arrays = {k: data[k] for k in data.files}
        if variant == "nan":
            arrays["codes"] = np.full_like(arrays["codes"], np.nan)
        elif variant == "shape":
            arrays["codes"] = arrays["codes"][:, :3]
        elif variant == "strings":
            arrays["codes"] = np.full(arrays["codes"].shape, "x")
        elif variant == "no_codes":
            del arrays["codes"]
        elif variant == "keys":
            arrays["keys"] = np.array([[1.0]])
        with open(shard, "wb") as f:
            np.savez(f, **arrays)


@pytest.mark.parametrize("variant", ["empty", "truncated", "huge_header", "nan", "shape", "strings", "no_codes",
                                     "keys"])
def test_a_tampered_shard_is_inverted_again_never_published(tiny_pack_dir, tmp_path, variant):
    from idinvert.engine.dataset_inversion import DatasetJob, invert_dataset, resolve_lambda_vgg
    from idinvert.engine.inversion import InversionConfig
    from idinvert.pack import load_pack

    pack = load_pack(tiny_pack_dir)
    paths = [_photo(tmp_path / f"p{i}.png", i) for i in range(3)]

    def job(out: Path) -> DatasetJob:
        return DatasetJob(sources=paths, names=[p.stem for p in paths], out=out,
                          config=resolve_lambda_vgg(InversionConfig(method="encoder"), pack), batch_size=2)

    assert invert_dataset(pack, job(tmp_path / "ref"), model=pack.identity()).finished
    partial = job(tmp_path / "out")
    assert invert_dataset(pack, partial, model=pack.identity(), stop=lambda: True).stopped
    (shard,) = partial.work.glob("shards/*.npz")
    _tamper_shard(shard, variant)
    outcome = invert_dataset(pack, partial, model=pack.identity())
    assert outcome.finished and outcome.inverted == 3  # the tampered batch was done again
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "codes.npy"), np.load(tmp_path / "ref" / "codes.npy"))


def test_linked_or_unreadable_work_folders_are_one_line(tiny_pack_dir, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        _photo(photos / f"p{i}.png", i)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = ["invert", str(photos), "--model", str(tiny_pack_dir), "--method", "encoder", "--quiet"]
    (tmp_path / ".a.partial").symlink_to(elsewhere)  # the whole work folder
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    (tmp_path / ".b.partial").mkdir()
    (tmp_path / ".b.partial" / "shards").symlink_to(elsewhere)  # its shards/
    assert main([*args, "--out", str(tmp_path / "b")]) == 2
    (tmp_path / ".c.partial").mkdir()  # unfinished work whose settings.json nests past the recursion limit
    (tmp_path / ".c.partial" / "settings.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main([*args, "--out", str(tmp_path / "c")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("idinvert: error:") for line in lines), lines
    assert "symbolic link" in lines[0] and "symbolic link" in lines[1] and "settings.json" in lines[2]
    assert list(elsewhere.iterdir()) == []


@pytest.mark.slow
def test_sigterm_stops_a_data_set_inversion_with_status_143(tiny_pack_dir, tmp_path):
    """invert keeps its finished batches on SIGTERM like on Ctrl-C, and exits 143 as documented (it was 130)."""
    import time

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(8):
        _photo(photos / f"p{i}.png", i)
    work = tmp_path / ".out.partial"
    command = [sys.executable, "-m", "idinvert", "invert", str(photos), "--model", str(tiny_pack_dir), "--steps", "20",
               "--batch-size", "1", "--out", str(tmp_path / "out"), "--quiet"]
    process = subprocess.Popen(command, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(work.glob("shards/*.npz")):
        assert process.poll() is None and time.monotonic() < deadline, "no shard before the run ended"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert list(work.glob("shards/*.npz")) and not (tmp_path / "out").exists()


# --- train-boundary --out: the output rule for files -----------------------------------------------------------
def test_train_boundary_out_replaces_only_a_boundary_and_never_an_input(tiny_pack_dir, tmp_path, capsys):
    """--out inv/codes.npy emptied the invert folder it read; --out notes.txt replaced the user's notes."""
    from idinvert.boundaries import save_boundary

    inv = tmp_path / "inv"
    photos = [_photo(tmp_path / f"p{i}.png", i) for i in range(4)]
    assert main(["invert", *map(str, photos), "--model", str(tiny_pack_dir), "--out", str(inv), "--method",
                 "encoder", "--no-images", "--quiet"]) == 0
    codes = (inv / "codes.npy").read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros(3))
    base = ["train-boundary", "--model", str(tiny_pack_dir), "--attribute", "smile", "--codes", str(inv), "--out"]
    capsys.readouterr()
    for out, message in ((inv / "codes.npy", "input"), (notes, "must end in .npy"), (plain, "did not write"),
                         (tmp_path / "folder.npy", "not a plain file")):
        if message == "not a plain file":
            out.mkdir()
        assert main([*base, str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    assert (inv / "codes.npy").read_bytes() == codes and notes.read_text() == "my notes"
    assert np.array_equal(np.load(plain), np.zeros(3))
    earlier = save_boundary(tmp_path / "earlier.npy", np.ones((1, 8, 32), np.float32))
    from idinvert.boundaries import is_boundary_file
    from idinvert.safety import claim_output_file

    assert claim_output_file(earlier, inputs=[inv], suffix=".npy", ours=is_boundary_file) == earlier


def test_a_250_character_out_inverts_with_a_short_work_folder(tiny_pack_dir, tmp_path):
    out = tmp_path / ("o" * 250)
    photo = _photo(tmp_path / "p.png", 0)
    assert main(["invert", str(photo), "--model", str(tiny_pack_dir), "--out", str(out), "--method", "encoder",
                 "--quiet"]) == 0
    assert (out / "codes.npy").is_file() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
