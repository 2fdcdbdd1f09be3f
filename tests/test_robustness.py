"""Every entry point against mistakes and crafted files (issue 20, docs/security.md).

Each test builds its crafted input here (no binaries are committed) and asserts what the rules of
``idinvert.safety`` promise: a one-line error and exit status 2, nothing written outside --out,
unrelated files untouched, and memory bounded — counted by allocation size, or by an address-space
limit on a subprocess — never by timing.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from idinvert.engine import inversion
from idinvert import safety
from idinvert.cli import main
from idinvert.boundaries import load_boundary
from idinvert.errors import BoundaryError, ConfigError, ImageError
from idinvert.images import MAX_PIXELS, decode_image, unique_names
from idinvert.pack import load_pack

REPO = Path(__file__).resolve().parents[1]
L, C = 8, 32  # the tiny pack's codes


# --- helpers ----------------------------------------------------------------------------------------

def photo(path: Path, size=(32, 32), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def unrelated(folder: Path) -> Path:
    """A folder of the user's own files, which no run may delete or change."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.txt").write_text("my only copy")
    return folder


def untouched(folder: Path) -> bool:
    return sorted(p.name for p in folder.iterdir()) == ["thesis.txt"] and \
        (folder / "thesis.txt").read_text() == "my only copy"


def fails(capsys, *args: str, expect: str = "", avoid: str = "") -> str:
    """Run the CLI in-process: exit status 2 and one line naming ``expect`` (and not ``avoid``)."""
    status = main([*map(str, args)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("idinvert: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expect in err, err
    if avoid:
        assert avoid not in err, err
    return err


def run_limited(*args: str, limit_gb: float = 2.5, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in a subprocess whose address space is capped: a refused allocation shows up as a
    MemoryError traceback or a crash instead of the one-line error the test expects."""
    limit = int(limit_gb * 1024**3)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "idinvert", *map(str, args)], capture_output=True, text=True,
                          preexec_fn=cap, env=env, cwd=cwd, timeout=600)


def assert_one_line(result: subprocess.CompletedProcess, expect: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    err = result.stderr.strip()
    assert err.startswith("idinvert: error: ") and "\n" not in err and expect in err, err


@pytest.fixture(scope="module")
def inv(tiny_pack_dir, tmp_path_factory) -> Path:
    """An invert output folder of two photos (encoder only: fast)."""
    root = tmp_path_factory.mktemp("inv")
    a, b = photo(root / "a.png", seed=1), photo(root / "b.png", seed=2)
    out = root / "inv"
    assert main(["invert", str(a), str(b), "--model", str(tiny_pack_dir), "--out", str(out), "--method", "encoder",
                 "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def boundary(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("b") / "plain.npy"
    np.save(path, np.random.default_rng(0).normal(size=(1, C)).astype(np.float32))
    return path


# --- deleting or overwriting what is not ours --------------------------------------------------------

def test_export_refuses_an_unrelated_folder(tmp_path, capsys):
    mine = unrelated(tmp_path / "mine")
    (tmp_path / "run").mkdir()
    fails(capsys, "export", tmp_path / "run", "--out", mine, expect="did not write")
    assert untouched(mine)


def test_convert_overwrite_replaces_only_a_pack_and_never_its_own_input(tiny_pack_dir, tmp_path, capsys):
    mine = unrelated(tmp_path / "mine")
    weights = tmp_path / "g.pth"
    weights.write_bytes(b"whatever")
    fails(capsys, "convert", "--generator", weights, "--out", mine, "--overwrite", "--quiet", expect="did not write")
    assert untouched(mine)
    pack = tmp_path / "pack"
    shutil.copytree(tiny_pack_dir, pack)
    inside = pack / "g.pth"
    inside.write_bytes(b"whatever")
    fails(capsys, "convert", "--generator", inside, "--out", pack, "--overwrite", "--quiet", expect="also an input")
    assert inside.read_bytes() == b"whatever" and (pack / "generator.safetensors").is_file()


def test_prepare_data_refuses_an_unrelated_folder_and_reuses_its_own(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos / "a.png")
    mine = unrelated(tmp_path / "mine")
    fails(capsys, "prepare-data", photos, "--out", mine, "--resolution", "16", "--quiet", expect="did not write")
    assert untouched(mine)
    fails(capsys, "prepare-data", photos, "--out", photos, "--resolution", "16", "--quiet", expect="also an input")
    for _ in range(2):
        assert main(["prepare-data", str(photos), "--out", str(tmp_path / "data"), "--resolution", "16",
                     "--quiet"]) == 0


def test_edit_into_its_own_input_folder_is_refused(tiny_pack_dir, inv, boundary, tmp_path, capsys):
    before = (inv / "codes.npy").read_bytes()
    fails(capsys, "edit", inv, "--boundary", boundary, "--model", tiny_pack_dir, "--out", inv, "--quiet",
          expect="also an input")
    fails(capsys, "mix", inv, inv, "--model", tiny_pack_dir, "--out", inv, "--quiet", expect="also an input")
    assert (inv / "codes.npy").read_bytes() == before


def test_outputs_go_only_into_new_empty_or_idinvert_folders(tiny_pack_dir, tmp_path, capsys):
    a = photo(tmp_path / "a.png")
    mine = unrelated(tmp_path / "mine")
    fails(capsys, "invert", a, "--model", tiny_pack_dir, "--out", mine, "--method", "encoder", "--quiet",
          expect="did not write")
    assert untouched(mine)
    out = tmp_path / "out"
    for _ in range(2):  # a second run replaces the first run's files: the folder carries the marker
        assert main(["invert", str(a), "--model", str(tiny_pack_dir), "--out", str(out), "--method", "encoder",
                     "--quiet"]) == 0
    assert (out / safety.MARKER).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["invert", str(a), "--model", str(tiny_pack_dir), "--out", str(empty), "--method", "encoder",
                 "--quiet"]) == 0


# --- paths and names from file contents -------------------------------------------------------------

@pytest.mark.parametrize("name", ["../escaped", "/tmp/idinvert-absolute", "a/b", ".hidden", ""])
def test_manifest_names_cannot_steer_where_files_are_written(tiny_pack_dir, inv, boundary, tmp_path, capsys,
                                                             name):
    crafted = tmp_path / "crafted"
    shutil.copytree(inv, crafted)
    manifest = json.loads((crafted / "manifest.json").read_text())
    manifest["names"][0] = name
    (crafted / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "work").mkdir()
    out = tmp_path / "work" / "out"
    fails(capsys, "edit", crafted, "--boundary", boundary, "--model", tiny_pack_dir, "--out", out, "--quiet",
          expect="not a plain file name")
    fails(capsys, "mix", crafted, inv, "--model", tiny_pack_dir, "--out", out, "--quiet",
          expect="not a plain file name")
    assert not out.exists() and sorted(p.name for p in (tmp_path / "work").iterdir()) == []
    assert not Path("/tmp/idinvert-absolute_ori.png").exists()


def test_duplicate_input_names_get_distinct_files(tiny_pack_dir, tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
    files = [photo(tmp_path / "x" / "face.png", seed=1), photo(tmp_path / "y" / "face.png", seed=2),
             photo(tmp_path / "x" / "face_2.png", seed=3)]
    out = tmp_path / "out"
    assert main(["invert", *map(str, files), "--model", str(tiny_pack_dir), "--out", str(out), "--method",
                 "encoder", "--quiet"]) == 0
    names = json.loads((out / "manifest.json").read_text())["names"]
    assert len(set(names)) == 3 and names[:2] == ["face", "face_2"]
    originals = [np.asarray(Image.open(out / f"{n}_ori.png")) for n in names]
    assert not np.array_equal(originals[1], originals[2])  # the third did not overwrite the second


def test_names_are_safe_unique_and_case_insensitive():
    assert unique_names([Path("face.png"), Path("face.png"), Path("face_2.png")]) == ["face", "face_2", "face_2_2"]
    assert safety.unique_names(["Face", "face"]) == ["Face", "face_2"]
    assert safety.safe_name("../../etc/passwd") == "etc_passwd"
    assert safety.safe_name("..") == "image" and safety.safe_name("") == "image"
    with pytest.raises(Exception, match="leave the output folder"):
        safety.inside(Path("/tmp/out"), "../x")


# --- numbers from options ------------------------------------------------------------------------------

@pytest.mark.parametrize("option, value, expect", [
    ("--steps", "1000000000", "--steps"), ("--batch-size", "0", "--batch-size"),
    ("--lambda-dom", "nan", "--lambda-dom"), ("--lambda-vgg", "inf", "--lambda-vgg"),
    ("--early-stop", "nan", "--early-stop"), ("--seed", str(2**64 + 1), "--seed"), ("--seed", "-1", "--seed"),
    ("--device", "meta", "--device"), ("--device", "mps", "--device"), ("--lr", "nan", "--lr"),
])
def test_invert_options_are_checked_before_any_work(tiny_pack_dir, tmp_path, capsys, option, value, expect):
    a = photo(tmp_path / "a.png")
    err = fails(capsys, "invert", a, "--model", tiny_pack_dir, "--out", tmp_path / "out", option, value, "--quiet",
                expect=expect, avoid="learning rate" if option == "--lambda-vgg" else "")
    assert not (tmp_path / "out").exists(), err


@pytest.mark.parametrize("distances", ["nan,3", "1e30,1e30", "-inf,0"])
def test_edit_distances_must_be_finite_and_small(tiny_pack_dir, inv, boundary, tmp_path, capsys, distances):
    fails(capsys, "edit", inv, "--boundary", boundary, "--model", tiny_pack_dir, "--out", tmp_path / "o",
          f"--distances={distances}", "--quiet", expect="--distances", avoid="pack")


def test_a_huge_step_count_allocates_nothing_up_front(tiny_pack, monkeypatch):
    """The loss history grows as the steps run: 10⁶ steps stopped after one allocate 1024 rows."""
    sizes = []
    real_zeros = torch.zeros

    def counting_zeros(*shape, **kwargs):
        t = real_zeros(*shape, **kwargs)
        sizes.append(t.numel())
        return t

    monkeypatch.setattr(torch, "zeros", counting_zeros)
    x = torch.zeros(1, 3, 32, 32)
    init = tiny_pack.encoder(x).detach()
    trace = inversion.optimize_codes(tiny_pack.generator, None, x, init, steps=inversion.MAX_STEPS,
                                     early_stop=1.0, patience=1)
    assert trace.losses["total"].shape == (1, 1)
    assert max(sizes) <= max(inversion.HISTORY_ROWS, x.numel())


def test_the_history_grows_past_its_first_rows(tiny_pack, monkeypatch):
    monkeypatch.setattr(inversion, "HISTORY_ROWS", 2)
    x = torch.zeros(1, 3, 32, 32)
    trace = inversion.optimize_codes(tiny_pack.generator, None, x, tiny_pack.encoder(x).detach(), steps=5)
    assert trace.losses["total"].shape == (5, 1) and trace.steps_run.tolist() == [5]


def test_a_one_pixel_image_is_refused(tiny_pack_dir, tmp_path, capsys):
    tiny = photo(tmp_path / "dot.png", size=(1, 1))
    fails(capsys, "invert", tiny, "--model", tiny_pack_dir, "--out", tmp_path / "o", "--quiet",
          expect="at least 16 pixels")


def test_library_configs_refuse_non_finite_numbers():
    for bad in (dict(lambda_dom=float("nan")), dict(early_stop=float("nan")), dict(steps=10**9),
                dict(lambda_vgg=float("inf")), dict(steps=2.5)):
        with pytest.raises(ConfigError):
            inversion.InversionConfig(**bad)


# --- crafted model packs and weight files ---------------------------------------------------------------

def crafted_pack(tiny_pack_dir: Path, folder: Path, **changes) -> Path:
    shutil.copytree(tiny_pack_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if key in config["generator"]:
            config["generator"][key] = value
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("change, expect", [
    (dict(mapping_layers=1_000_000), "mapping_layers"), (dict(w_dim=10**9), "w_dim"),
    (dict(fmaps_max=2048, mapping_fmaps=2048), "does not fit"),  # in bounds, but not what the file holds
    (dict(resolution=32.0), "whole number"), (dict(z_dim="32"), "z_dim"),
    (dict(format_version="1"), "format_version"), (dict(format_version=1.5), "format_version"),
    (dict(generator_kind=["stylegan"]), "generator_kind"),
])
@pytest.mark.slow
def test_crafted_pack_configs_fail_before_any_network_is_built(tiny_pack_dir, tmp_path, change, expect):
    pack = crafted_pack(tiny_pack_dir, tmp_path / "pack", **change)
    a = photo(tmp_path / "a.png")
    result = run_limited("invert", a, "--model", pack, "--out", tmp_path / "out", "--quiet")
    assert_one_line(result, expect)
    assert not (tmp_path / "out").exists()


def test_a_pack_cannot_name_files_outside_itself(tiny_pack_dir, tmp_path):
    pack = crafted_pack(tiny_pack_dir, tmp_path / "pack", perceptual={"convention": "torchvision",
                                                                      "lambda_vgg": 0.1, "weights": "../../x"})
    with pytest.raises(Exception, match="outside the pack"):
        load_pack(pack)


@pytest.mark.slow
def test_a_small_pth_claiming_huge_widths_is_refused_before_allocation(tmp_path):
    """A stride-0 tensor stores one number but claims [512, 10⁶]: the configuration it implies is
    refused before the network (and its 2 GB of weights) would be built."""
    state = {"mapping.dense0.fc.weight": torch.zeros(1).expand(512, 1_000_000),
             "mapping.dense1.fc.weight": torch.zeros(1).expand(512, 512),
             "synthesis.layer0.epilogue.style_mod.dense.fc.weight": torch.zeros(1).expand(1024, 512),
             "synthesis.layer0.const": torch.zeros(1, 512, 4, 4),
             "synthesis.output0.conv.weight": torch.zeros(3, 512, 1, 1)}
    for i in range(8):
        state[f"synthesis.layer{i}.epilogue.bias"] = torch.zeros(512)
    path = tmp_path / "crafted.pth"
    torch.save(state, path)
    assert path.stat().st_size < 200_000
    result = run_limited("convert", "--generator", path, "--out", tmp_path / "pack", "--quiet")
    assert_one_line(result, "z_dim")
    assert not (tmp_path / "pack").exists()


# --- crafted arrays and boundary files ----------------------------------------------------------------

def npy_claiming(path: Path, shape: tuple[int, ...], dtype="<f4", payload: bytes = b"\0" * 64) -> Path:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
        f.write(payload)
    return path


@pytest.mark.slow
def test_npy_headers_are_checked_before_allocation(tiny_pack_dir, inv, boundary, tmp_path):
    crafted = tmp_path / "crafted"
    shutil.copytree(inv, crafted)
    npy_claiming(crafted / "codes.npy", (2, L, C * 10**8))  # wrong shape: refused from the header
    result = run_limited("edit", crafted, "--boundary", boundary, "--model", tiny_pack_dir, "--out",
                         tmp_path / "o", "--quiet")
    assert_one_line(result, "codes")
    npy_claiming(crafted / "codes.npy", (2, L, C))  # the right shape, but the data is not there
    result = run_limited("edit", crafted, "--boundary", boundary, "--model", tiny_pack_dir, "--out",
                         tmp_path / "o", "--quiet")
    assert_one_line(result, "truncated")
    huge = npy_claiming(tmp_path / "huge.npy", (10**6, 10**6))
    with pytest.raises(BoundaryError, match="limit"):
        load_boundary(huge, (L, C))
    with pytest.raises(ConfigError, match="GB limit"):
        safety.load_npy(huge)


def nested_boundary(path: Path, meta) -> Path:
    content = {"boundary": np.zeros((1, L, C), np.float32), "meta_data": meta}
    with open(path, "wb") as f:
        np.save(f, content, allow_pickle=True)
    return path


def test_shared_nested_meta_data_is_refused_without_walking_it(tmp_path):
    deep = [1]
    for _ in range(60):  # 2⁶⁰ paths through 60 shared lists: a walk of every path never ends
        deep = [deep, deep]
    path = nested_boundary(tmp_path / "deep.npy", {"x": deep})
    assert path.stat().st_size < 4096
    with pytest.raises(BoundaryError, match="nested deeper"):
        load_boundary(path, (L, C))
    wide = [0.0] * 10
    for _ in range(5):  # depth 6, 10⁶ leaves: within the depth limit, over the size limit
        wide = [wide] * 10
    with pytest.raises(BoundaryError, match="entries|values"):
        load_boundary(nested_boundary(tmp_path / "wide.npy", {"x": wide}), (L, C))
    big = nested_boundary(tmp_path / "big.npy", {"x": np.zeros(100_000, np.float32)})
    with pytest.raises(BoundaryError, match="values"):  # it would be copied into every manifest
        load_boundary(big, (L, C))


def test_recursive_json_is_refused_with_one_line(tmp_path, capsys, tiny_pack_dir, inv, boundary):
    crafted = tmp_path / "crafted"
    shutil.copytree(inv, crafted)
    (crafted / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    fails(capsys, "edit", crafted, "--boundary", boundary, "--model", tiny_pack_dir, "--out", tmp_path / "o",
          "--quiet", expect="nested")
    with pytest.raises(ConfigError, match="nested deeper"):
        safety.parse_json('{"a":' * 40 + "1" + "}" * 40, "x")


# --- images -----------------------------------------------------------------------------------------------

def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width × height pixels (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.slow
def test_a_decompression_bomb_is_one_line_in_the_cli(tiny_pack_dir, tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 20000, 20000)
    result = run_limited("invert", bomb, "--model", tiny_pack_dir, "--out", tmp_path / "o", "--quiet")
    assert_one_line(result, "megapixels")
    with pytest.raises(ImageError, match="megapixels"):
        decode_image(bomb.read_bytes())  # the editor's path: the same decoder and limit
    assert MAX_PIXELS == 50_000_000


def test_big_jpegs_are_shrunk_while_decoding(tmp_path):
    big = Image.new("RGB", (4000, 3000), (200, 100, 50))
    big.save(tmp_path / "big.jpg", quality=80)
    small = decode_image(tmp_path / "big.jpg", max_side=1024)
    assert max(small.size) == 1024


# --- the file system: checked before the work starts --------------------------------------------------

def test_an_output_under_a_file_is_refused_before_any_work(tiny_pack_dir, tmp_path, capsys, monkeypatch):
    a = photo(tmp_path / "a.png")
    (tmp_path / "file").write_text("x")
    ran = []
    monkeypatch.setattr("idinvert.engine.dataset_inversion.read_image", lambda *args: ran.append(1))
    fails(capsys, "invert", a, "--model", tiny_pack_dir, "--out", tmp_path / "file" / "sub", "--quiet",
          expect="not a folder")
    assert not ran


def test_a_folder_where_sheet_png_goes_is_refused_before_any_work(tiny_pack_dir, tmp_path, capsys):
    a = photo(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    safety.mark_output_dir(out)
    (out / "sheet.png").mkdir()
    fails(capsys, "invert", a, "--model", tiny_pack_dir, "--out", out, "--quiet", expect="sheet.png")
    assert sorted(p.name for p in out.iterdir()) == [safety.MARKER, "sheet.png"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (a folder no one can write)")
def test_an_unwritable_output_is_refused_before_any_work(tiny_pack_dir, tmp_path, capsys):
    fails(capsys, "invert", photo(tmp_path / "a.png"), "--model", tiny_pack_dir, "--out", "/proc/idinvert-out",
          "--quiet", expect="cannot write")


SIGTERM_SCRIPT = """
import os, signal, sys
import idinvert.cli.edit as verb
from idinvert.cli import main
real = verb.write_outputs
def write_then_die(folder, *args, **kwargs):
    real(folder, *args, **kwargs)      # the staging folder is full
    os.kill(os.getpid(), signal.SIGTERM)
verb.write_outputs = write_then_die
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigterm_while_writing_removes_the_staging_folder(tiny_pack_dir, inv, boundary, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run([sys.executable, "-c", SIGTERM_SCRIPT, "edit", str(inv), "--boundary", str(boundary),
                             "--model", str(tiny_pack_dir), "--out", str(work / "out"), "--quiet"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 143, result.stderr
    assert "terminated" in result.stderr and "Traceback" not in result.stderr
    assert list(work.iterdir()) == []


# --- the editor --------------------------------------------------------------------------------------------

flask = pytest.importorskip("flask", reason="the web editor needs Flask")

from idinvert.cli.serve import trusted_hosts  # noqa: E402
from idinvert.server import ServerOptions, create_app  # noqa: E402


@pytest.fixture(scope="module")
def editor_pack(tiny_pack):
    return tiny_pack


def editor_app(pack, tmp_path, **options):
    defaults = dict(steps=1, alignment="center", samples={}, temp_parent=tmp_path / "serve")
    app = create_app(pack, ServerOptions(**{**defaults, **options}))
    return app


@pytest.fixture
def app(editor_pack, tmp_path):
    app = editor_app(editor_pack, tmp_path)
    yield app
    app.extensions["idinvert"].close()


@pytest.mark.slow
def test_many_new_sessions_never_lock_out_a_new_tab(app):
    client = app.test_client()
    first = client.post("/api/session").json["session"]
    data = io_png((64, 64))
    assert client.post(f"/api/session/{first}/photo/a", data={"file": (data, "p.png")},
                       content_type="multipart/form-data").status_code == 200
    for _ in range(40):  # a script opens sessions and never uses them
        assert client.post("/api/session").status_code == 201
    assert len(app.extensions["idinvert"].store) == 32
    assert client.get(f"/api/session/{first}/status").status_code == 200  # the tab with a photo stays


def io_png(size) -> "io.BytesIO":
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        buffer, format="PNG")
    buffer.seek(0)
    return buffer


def test_infinite_limits_are_refused(editor_pack, tmp_path, capsys, tiny_pack_dir):
    for bad in (dict(idle_timeout=float("inf")), dict(max_upload_mb=float("inf")), dict(idle_timeout=float("nan")),
                dict(max_sessions=0)):
        with pytest.raises(ConfigError):
            ServerOptions(**bad)
    fails(capsys, "serve", "--model", tiny_pack_dir, "--idle-timeout", "inf", expect="--idle-timeout")
    fails(capsys, "serve", "--model", tiny_pack_dir, "--max-upload-mb", "inf", expect="--max-upload-mb")
    fails(capsys, "serve", "--model", tiny_pack_dir, "--host", "256.1.1.1", expect="--host", avoid="port")


def test_deep_or_large_json_bodies_get_a_4xx(app):
    client = app.test_client()
    sid = client.post("/api/session").json["session"]
    deep = "[" * 20_000 + "]" * 20_000
    r = client.post(f"/api/session/{sid}/render", data=deep, content_type="application/json")
    assert r.status_code == 400 and "nested" in r.json["error"]
    r = client.post(f"/api/session/{sid}/render", data='{"edits": {}, "x": "' + "a" * 100_000 + '"}',
                    content_type="application/json")
    assert r.status_code == 413
    r = client.get(f"/api/session/{sid}/download/code.npy?p=" + "[" * 5000)
    assert r.status_code == 400


@pytest.mark.slow
def test_malformed_bodies_never_cause_a_server_error(app):
    client = app.test_client()
    sid = client.post("/api/session").json["session"]
    rng = np.random.default_rng(0)
    bodies = [b"", b"{", b"null", b"[]", b'"x"', b"1e999", b'{"face": 1e999}', b'{"face": "0"}', b'{"edits": []}',
              b'{"edits": {"a": {"b": 1}}}', b'{"crop_size": -1}', b"\xff\xfe\x00", rng.bytes(300)]
    endpoints = [f"/api/session/{sid}/a/invert", f"/api/session/{sid}/render", f"/api/session/{sid}/diffuse",
                 f"/api/session/{sid}/photo/a", "/api/session"]
    for endpoint in endpoints:
        for body in bodies:
            for kind in ("application/json", "multipart/form-data", "text/plain"):
                r = client.post(endpoint, data=body, content_type=kind)
                assert r.status_code < 500, (endpoint, body[:20], kind, r.status_code)


@pytest.mark.parametrize("host", ["::1", "127.0.0.2", "127.0.0.1", "localhost"])
def test_every_loopback_address_checks_the_host_header(editor_pack, tmp_path, host):
    app = editor_app(editor_pack, tmp_path, trusted_hosts=trusted_hosts(host))
    try:
        client = app.test_client()
        for evil in ("attacker.example:7860", "attacker.example", "[::2]:7860", "127.0.0.1.attacker.example"):
            assert client.get("/api/info", headers={"Host": evil}).status_code == 400, evil
        shown = f"[{host}]:7860" if ":" in host else f"{host}:7860"
        assert client.get("/api/info", headers={"Host": shown}).status_code == 200
    finally:
        app.extensions["idinvert"].close()


def test_a_big_upload_is_kept_shrunk_and_freed_with_its_session(app):
    import io

    client = app.test_client()
    sid = client.post("/api/session").json["session"]
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 4000), (90, 120, 150)).save(buffer, format="JPEG", quality=70)
    buffer.seek(0)
    r = client.post(f"/api/session/{sid}/photo/a", data={"file": (buffer, "big.jpg")},
                    content_type="multipart/form-data")
    assert r.status_code == 200, r.json
    store = app.extensions["idinvert"].store
    session = store.get(sid)
    assert max(session.photos["a"].image.size) <= 2048  # 24 MP → at most 4 MP kept
    client.post(f"/api/session/{sid}/close")
    assert session.closed and not session.photos and not session.folder.exists()
