"""The web editor's API (idinvert.server, ``idinvert serve``) through Flask's test client.

A copy of the tiny pack with two random boundaries stands in for a real pack; faces are the centre
square of synthetic photos (alignment="center"), except in the one test that runs dlib on
scikit-image's astronaut. Inversions run 3 steps.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("flask", reason="the web editor needs Flask: pip install 'flask>=3.0,<4'")

from idinvert.engine.editing import manipulate  # noqa: E402
from idinvert.boundaries import save_boundary  # noqa: E402
from idinvert.errors import IdinvertError  # noqa: E402
from idinvert.pack import load_pack, update_pack  # noqa: E402
from idinvert.server import ServerOptions, create_app  # noqa: E402
from idinvert.server import editor as editor_module  # noqa: E402
from idinvert.server.sessions import Session  # noqa: E402

STEPS = 3
ATTRIBUTES = ("age", "smile")


def make_edit_pack(tiny_pack_dir: Path, folder: Path) -> Path:
    """The tiny pack plus unit-norm random boundaries (official dict format) for ATTRIBUTES."""
    shutil.copytree(tiny_pack_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    g = config["generator"]
    num_layers, w_dim = 2 * (g["resolution"].bit_length() - 1) - 2, g["w_dim"]
    rng = torch.Generator().manual_seed(7)
    files = {}
    for name in ATTRIBUTES:
        b = torch.randn(1, num_layers, w_dim, generator=rng)
        save_boundary(folder.parent / f"{name}.npy", b / b.norm(dim=-1, keepdim=True))
        files[f"boundaries/{name}.npy"] = folder.parent / f"{name}.npy"
    update_pack(folder, config_updates={"boundaries": {n: f"boundaries/{n}.npy" for n in ATTRIBUTES}}, files=files)
    return folder


@pytest.fixture(scope="module")
def edit_pack(tiny_pack_dir, tmp_path_factory):
    return load_pack(make_edit_pack(tiny_pack_dir, tmp_path_factory.mktemp("serve") / "tiny-edit"))


@pytest.fixture
def make_app(edit_pack, tmp_path):
    """``make_app(**options)`` → a Flask app (closed after the test), its temp folder under tmp_path."""
    apps = []

    def make(**options):
        options = {"steps": STEPS, "alignment": "center", "temp_parent": tmp_path, "samples": {}} | options
        app = create_app(edit_pack, ServerOptions(**options))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["idinvert"].close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def photo_bytes(size=(120, 90), fmt="PNG", seed=0, noise=True) -> bytes:
    """A random photo (or a flat grey one, which compresses to almost nothing)."""
    rng = np.random.default_rng(seed)
    array = (rng.random((size[1], size[0], 3)) * 255 * noise + 128 * (not noise)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def png_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def new_session(client) -> str:
    r = client.post("/api/session")
    assert r.status_code == 201
    return r.json["session"]


def upload(client, sid, slot="a", data=None, name="photo.png"):
    return client.post(f"/api/session/{sid}/photo/{slot}",
                       data={"file": (io.BytesIO(photo_bytes() if data is None else data), name)})


def wait_ready(client, sid, slot="a", timeout=30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/api/session/{sid}/status").json
        info = status["slots"][slot]
        if info["ready"] or (info["job"] and info["job"]["state"] in ("error", "cancelled")):
            return info
        time.sleep(0.05)
    raise AssertionError(f"slot {slot} was not inverted within {timeout} s")


def inverted_session(client, slots=("a",)) -> str:
    sid = new_session(client)
    for k, slot in enumerate(slots):
        assert upload(client, sid, slot, photo_bytes(seed=k)).status_code == 200
        assert client.post(f"/api/session/{sid}/{slot}/invert", json={"face": 0}).status_code == 202
        assert wait_ready(client, sid, slot)["ready"]
    return sid


def render(client, sid, **params) -> np.ndarray:
    r = client.post(f"/api/session/{sid}/render", json=params)
    assert r.status_code == 200, r.json
    return png_array(r.data)


# ----------------------------------------------------------------------------- page and info

def test_info_describes_the_pack_its_sliders_and_limits(make_app):
    info = make_app(samples={"test-photo": lambda: Image.new("RGB", (64, 64))}).test_client().get("/api/info").json
    assert info["pack"]["resolution"] == 32 and info["pack"]["code_shape"] == [8, 32] and info["pack"]["code_space"] == "W+"
    assert [a["name"] for a in info["attributes"]] == list(ATTRIBUTES)
    assert info["attributes"][0]["min"] == -3 and info["attributes"][0]["max"] == 3
    assert info["samples"] == ["test-photo"] and info["steps"] == STEPS
    assert info["max_upload_bytes"] == 20 * 1024 * 1024
    assert info["alignment"]["mode"] == "center" and "centre square" in info["alignment"]["notice"]
    assert info["mix"] == {"layers": 8, "default_start": 6}
    assert info["diffusion"]["crop_size"] == 14  # 110 of 256, scaled to 32 px


def test_page_and_static_files_are_served_with_safe_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and b'<script src="/static/editor.js"' in page.data
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for name, marker in (("editor.js", b"sendBeacon"), ("editor.css", b".slider")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and marker in r.data
    assert client.get("/api/info").headers["Cache-Control"] == "no-store"


def test_the_bundled_sample_is_offered_when_scikit_image_is_installed(edit_pack, tmp_path):
    pytest.importorskip("skimage")
    app = create_app(edit_pack, ServerOptions(steps=STEPS, alignment="center", temp_parent=tmp_path))
    try:
        client = app.test_client()
        assert client.get("/api/info").json["samples"] == ["astronaut"]
        sid = new_session(client)
        r = client.post(f"/api/session/{sid}/photo/a", data={"sample": "astronaut"})
        assert r.status_code == 200 and (r.json["width"], r.json["height"]) == (512, 512)
        assert not list(app.extensions["idinvert"].store.root.rglob("*.upload"))  # nothing uploaded, nothing kept
    finally:
        app.extensions["idinvert"].close()


# ----------------------------------------------------------------------------- the editing flow

def test_upload_invert_edit_and_download(app, client, edit_pack):
    sid = new_session(client)
    r = upload(client, sid)
    assert r.status_code == 200
    assert r.json["faces"] == [{"index": 0, "box": [15, 0, 105, 90], "detector": "center", "score": 0.0}]
    assert client.get(f"/api/session/{sid}/a/photo.jpg").mimetype == "image/jpeg"
    r = client.post(f"/api/session/{sid}/a/invert", json={"face": 0})
    assert r.status_code == 202 and r.json["job"]["steps"] == STEPS
    info = wait_ready(client, sid)
    assert info["job"]["state"] == "done" and info["job"]["step"] == STEPS

    reconstruction = png_array(client.get(f"/api/session/{sid}/a/reconstruction.png").data)
    assert reconstruction.shape == (32, 32, 3)
    assert png_array(client.get(f"/api/session/{sid}/a/face/0.png").data).shape == (32, 32, 3)
    # No edit renders the stored code: exactly the reconstruction. An edit changes the face.
    np.testing.assert_array_equal(render(client, sid), reconstruction)
    np.testing.assert_array_equal(render(client, sid, edits={"age": 0}), reconstruction)
    edited = render(client, sid, edits={"smile": 3.0})
    assert np.abs(edited.astype(int) - reconstruction).mean() > 1.0

    latencies = []
    for d in np.linspace(-3, 3, 7):
        r = client.post(f"/api/session/{sid}/render", json={"edits": {"smile": float(d), "age": 1.0}})
        latencies.append(float(r.headers["X-Render-Ms"]))
    print(f"slider latency (tiny 32 px pack, CPU): median {np.median(latencies):.1f} ms")
    assert np.median(latencies) < 1000  # well under a second: one generator pass, no re-inversion

    params = json.dumps({"edits": {"smile": 3.0}})
    code_r = client.get(f"/api/session/{sid}/download/code.npy", query_string={"p": params})
    assert code_r.headers["Content-Disposition"] == 'attachment; filename="code.npy"'
    code = np.load(io.BytesIO(code_r.data), allow_pickle=False)
    assert code.shape == (1, 8, 32)
    session = app.extensions["idinvert"].store.get(sid)
    stored = torch.from_numpy(np.load(session.file("code-a.npy")))
    expected = manipulate(stored, app.extensions["idinvert"].editor.boundaries["smile"], distances=[3.0])[:, 0]
    np.testing.assert_allclose(code, expected.numpy(), atol=1e-6)
    face = client.get(f"/api/session/{sid}/download/edited-face.png", query_string={"p": params})
    np.testing.assert_array_equal(png_array(face.data), edited)
    photo = client.get(f"/api/session/{sid}/download/edited-photo.png", query_string={"p": params})
    assert photo.headers["Content-Disposition"] == 'attachment; filename="edited-photo.png"'
    full = png_array(photo.data)
    assert full.shape == (90, 120, 3)  # the whole photo, the face pasted into its centre square
    np.testing.assert_array_equal(full[:, :15], png_array(photo_bytes())[:, :15])
    assert session.file("photo-a.upload").read_bytes() == photo_bytes()


def test_interpolation_and_style_mixing_use_the_second_photo(client):
    sid = inverted_session(client, slots=("a", "b"))
    first = png_array(client.get(f"/api/session/{sid}/a/reconstruction.png").data)
    second = png_array(client.get(f"/api/session/{sid}/b/reconstruction.png").data)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(render(client, sid, blend=0), first)
    np.testing.assert_array_equal(render(client, sid, blend=20), second)  # the end of the line is photo 2
    halfway = render(client, sid, blend=10)
    assert not np.array_equal(halfway, first) and not np.array_equal(halfway, second)
    np.testing.assert_array_equal(render(client, sid, mix_start=0), second)  # every layer from the style
    np.testing.assert_array_equal(render(client, sid, mix_start=8), first)  # none
    assert not np.array_equal(render(client, sid, mix_start=6), first)


def test_diffusion_runs_in_the_queue_and_checks_its_square(client):
    sid = new_session(client)
    r = client.post(f"/api/session/{sid}/diffuse", json={"crop_size": 14, "center_x": 16, "center_y": 18})
    assert r.status_code == 409 and "photo 1" in r.json["error"]
    for k, slot in enumerate("ab"):
        upload(client, sid, slot, photo_bytes(seed=k))
        client.post(f"/api/session/{sid}/{slot}/invert", json={"face": 0})
    r = client.post(f"/api/session/{sid}/diffuse", json={"crop_size": 30, "center_x": 2, "center_y": 2})
    assert r.status_code == 400 and "does not fit" in r.json["error"]
    r = client.post(f"/api/session/{sid}/diffuse", json={"crop_size": "big", "center_x": 16, "center_y": 16})
    assert r.status_code == 400 and "crop_size" in r.json["error"]
    assert client.get(f"/api/session/{sid}/diffusion/result.png").status_code == 409
    r = client.post(f"/api/session/{sid}/diffuse", json={"target": "b", "crop_size": 14, "center_x": 16,
                                                         "center_y": 18})
    assert r.status_code == 202 and r.json["job"]["kind"] == "diffuse"
    deadline = time.monotonic() + 30
    while not (d := client.get(f"/api/session/{sid}/status").json["diffusion"])["ready"]:
        assert d["job"]["state"] in ("queued", "running") and time.monotonic() < deadline
        time.sleep(0.05)
    stitched = png_array(client.get(f"/api/session/{sid}/diffusion/stitched.png").data)
    result = client.get(f"/api/session/{sid}/diffusion/result.png?download=1")
    assert result.headers["Content-Disposition"] == 'attachment; filename="diffusion-result.png"'
    assert stitched.shape == png_array(result.data).shape == (32, 32, 3)


def test_several_faces_are_offered_and_the_chosen_one_is_used(app, client, monkeypatch):
    editor = app.extensions["idinvert"].editor

    def two_faces(photo):
        left = editor.center_crop(photo.crop((0, 0, 60, 60)))
        right = editor.center_crop(photo.crop((60, 30, 120, 90)))
        right.box = (60, 30, 120, 90)
        return [left, right], None

    monkeypatch.setattr(editor, "find_faces", two_faces)
    sid = new_session(client)
    r = upload(client, sid)
    assert [f["index"] for f in r.json["faces"]] == [0, 1]
    assert client.get(f"/api/session/{sid}/a/face/2.png").status_code == 404
    assert client.post(f"/api/session/{sid}/a/invert", json={"face": 2}).status_code == 400
    assert client.post(f"/api/session/{sid}/a/invert", json={"face": 1}).status_code == 202
    assert wait_ready(client, sid)["face"] == 1
    photo = png_array(client.get(f"/api/session/{sid}/download/edited-photo.png").data)
    original = png_array(photo_bytes())
    np.testing.assert_array_equal(photo[:30], original[:30])  # face 0's square is untouched
    assert not np.array_equal(photo[30:, 60:], original[30:, 60:])


# ----------------------------------------------------------------------------- rejections

def test_uploads_that_are_not_usable_photos_are_refused_with_a_message(make_app, tmp_path):
    client = make_app(max_upload_mb=0.05, max_pixels=200_000).test_client()
    sid = new_session(client)
    cases = [
        (b"%PDF-1.4 not a photo", "doc.pdf", 415, "not an image file"),
        (photo_bytes()[:200], "cut.png", 415, "not an image file"),
        (b"", "empty.png", 415, "empty"),
        (photo_bytes((8, 8)), "tiny.png", 415, "at least 16 pixels"),
        (photo_bytes((600, 400), fmt="JPEG", noise=False), "big.jpg", 415, "megapixels"),
        (photo_bytes((160, 160)), "large.png", 413, "larger than 0.05 MB"),
    ]
    for data, name, status, words in cases:
        r = upload(client, sid, data=data, name=name)
        assert r.status_code == status and words in r.json["error"], (name, r.status_code, r.json)
    r = client.post(f"/api/session/{sid}/photo/a", data={})
    assert r.status_code == 400 and "form field 'file'" in r.json["error"]
    r = client.post(f"/api/session/{sid}/photo/a", data={"sample": "../../etc/passwd"})
    assert r.status_code == 400 and "unknown sample" in r.json["error"]
    assert client.post(f"/api/session/{sid}/photo/c", data={}).status_code == 404


def test_requests_out_of_order_or_with_bad_values_are_refused(client):
    sid = new_session(client)
    r = client.post(f"/api/session/{sid}/a/invert", json={"face": 0})
    assert r.status_code == 409 and "upload photo 1 first" in r.json["error"]
    r = client.post(f"/api/session/{sid}/render", json={})
    assert r.status_code == 409
    upload(client, sid)
    r = client.post(f"/api/session/{sid}/render", json={})
    assert r.status_code == 409 and "not inverted yet" in r.json["error"]
    for face in (-1, 1, "0", True):
        assert client.post(f"/api/session/{sid}/a/invert", json={"face": face}).status_code == 400
    r = client.post(f"/api/session/{sid}/a/invert", data="face=0", content_type="text/plain")
    assert r.status_code == 400 and "JSON object" in r.json["error"]
    client.post(f"/api/session/{sid}/a/invert", json={"face": 0})
    wait_ready(client, sid)
    bad = [({"edits": {"beard": 1}}, 400, "unknown attribute 'beard'; this model pack has: age, smile"),
           ({"edits": {"smile": 100}}, 400, "use -10 to 10"),
           ({"edits": {"smile": "1"}}, 400, "finite number"),
           ({"edits": [1]}, 400, "map attribute names"),
           ({"blend": 21}, 400, "blend must be a whole number from 0 to 20"),
           ({"mix_start": 9}, 400, "mix_start"),
           ({"zoom": 2}, 400, "unknown edit parameters"),
           ({"blend": 5}, 409, "photo 2"),
           ({"mix_start": 2}, 409, "photo 2")]
    for params, status, words in bad:
        r = client.post(f"/api/session/{sid}/render", json=params)
        assert r.status_code == status and words in r.json["error"], (params, r.json)
    r = client.post(f"/api/session/{sid}/render", data='{"edits": {"smile": NaN}}', content_type="application/json")
    assert r.status_code == 400 and "finite" in r.json["error"]
    r = client.get(f"/api/session/{sid}/download/code.npy?p=not-json")
    assert r.status_code == 400 and "JSON" in r.json["error"]
    assert client.get(f"/api/session/{sid}/download/other.npy").status_code == 404


def test_unknown_sessions_and_hosts_are_refused_and_a_full_server_makes_room(make_app):
    client = make_app(max_sessions=2).test_client()
    for path in ("/api/session/" + "x" * 32 + "/status", "/api/session/short/status"):
        r = client.get(path)
        assert r.status_code == 404 and r.json["code"] == "session-ended" and "reload" in r.json["error"]
    first, second = new_session(client), new_session(client)
    r = client.post("/api/session")  # a new tab is never locked out: the least recently used one goes
    assert r.status_code == 201
    assert client.get(f"/api/session/{first}/status").status_code == 404
    assert client.get(f"/api/session/{second}/status").status_code == 200
    assert client.get("/api/info", headers={"Host": "attacker.example:7860"}).status_code == 400
    assert client.get("/api/info", headers={"Host": "127.0.0.1:7860"}).status_code == 200


# ----------------------------------------------------------------------------- sessions, queue, files

def test_two_sessions_queue_for_the_one_worker_and_see_their_position(app, monkeypatch):
    editor = app.extensions["idinvert"].editor
    gate = threading.Event()
    real_invert = editor.invert

    def held(face, progress=None):
        progress(1)
        assert gate.wait(20), "the test never opened the gate"
        return real_invert(face, progress)

    monkeypatch.setattr(editor, "invert", held)
    first, second = app.test_client(), app.test_client()
    sid1, sid2 = new_session(first), new_session(second)
    upload(first, sid1)
    upload(second, sid2, data=photo_bytes(seed=1))
    assert first.post(f"/api/session/{sid1}/a/invert", json={"face": 0}).status_code == 202
    deadline = time.monotonic() + 10
    while first.get(f"/api/session/{sid1}/status").json["slots"]["a"]["job"]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = second.post(f"/api/session/{sid2}/a/invert", json={"face": 0})
    assert r.json["job"]["state"] == "queued" and r.json["job"]["ahead"] == 1
    job2 = second.get(f"/api/session/{sid2}/status").json["slots"]["a"]["job"]
    assert (job2["state"], job2["ahead"]) == ("queued", 1)
    job1 = first.get(f"/api/session/{sid1}/status").json["slots"]["a"]["job"]
    assert (job1["state"], job1["ahead"], job1["step"]) == ("running", 0, 1)
    gate.set()
    assert wait_ready(first, sid1)["ready"] and wait_ready(second, sid2)["ready"]
    # Each tab keeps its own photo and code.
    a = png_array(first.get(f"/api/session/{sid1}/a/reconstruction.png").data)
    b = png_array(second.get(f"/api/session/{sid2}/a/reconstruction.png").data)
    assert not np.array_equal(a, b)


def test_closing_a_tab_cancels_its_job_and_deletes_its_files(app, client, monkeypatch):
    state = app.extensions["idinvert"]
    started, gate = threading.Event(), threading.Event()
    real_invert = state.editor.invert

    def slow(face, progress=None):
        started.set()
        while True:  # until the job is cancelled by the close
            progress(1)
            if gate.wait(0.01):
                return real_invert(face, progress)

    monkeypatch.setattr(state.editor, "invert", slow)
    sid = new_session(client)
    upload(client, sid)
    client.post(f"/api/session/{sid}/a/invert", json={"face": 0})
    assert started.wait(10)
    session = state.store.get(sid)
    job = session.photos["a"].job
    assert session.folder.is_dir() and session.file("photo-a.upload").is_file()
    assert client.post(f"/api/session/{sid}/close", data=b"").status_code == 204  # what sendBeacon sends
    assert job.finished.wait(10) and job.state == "cancelled"
    assert not session.folder.exists() and len(state.store) == 0
    assert client.get(f"/api/session/{sid}/status").status_code == 404
    sid = new_session(client)
    assert client.delete(f"/api/session/{sid}").status_code == 204 and len(state.store) == 0


def test_the_reaper_deletes_idle_sessions_and_their_files(make_app):
    app = make_app(idle_timeout=0.3, reap_interval=0.05)
    store, client = app.extensions["idinvert"].store, app.test_client()
    sid = new_session(client)
    upload(client, sid)
    folder = store.get(sid).folder
    assert (folder / "photo-a.upload").is_file()
    deadline = time.monotonic() + 10
    while folder.exists():
        assert time.monotonic() < deadline, "the reaper did not delete the idle session"
        time.sleep(0.05)
    assert client.get(f"/api/session/{sid}/status").status_code == 404


def test_reap_keeps_sessions_in_use(make_app):
    store = make_app(idle_timeout=60, reap_interval=3600).extensions["idinvert"].store
    busy, idle = store.create(), store.create()
    now = time.monotonic()
    idle.last_seen = now - 61
    assert store.reap(now=now) == [idle.id]
    assert store.get(busy.id) is busy and not idle.folder.exists() and busy.folder.is_dir()


def test_files_stay_inside_the_server_folder(app, client, tmp_path):
    root = app.extensions["idinvert"].store.root
    assert root.parent == tmp_path.resolve() and root.name.startswith("idinvert-serve-")
    sid = new_session(client)
    r = upload(client, sid, name="../../../escape.png")
    assert r.status_code == 200
    client.post(f"/api/session/{sid}/a/invert", json={"face": 0})
    wait_ready(client, sid)
    written = sorted(p.relative_to(tmp_path.resolve()) for p in tmp_path.resolve().rglob("*") if p.is_file())
    session_dir = app.extensions["idinvert"].store.get(sid).folder.name
    assert [str(p) for p in written] == [f"{root.name}/{session_dir}/code-a.npy",
                                         f"{root.name}/{session_dir}/photo-a.upload"]
    for path in (f"/api/session/{sid}/a/../../../../etc/passwd", f"/api/session/{sid}/..%2F..%2Fapp.py",
                 f"/api/session/{sid}/%2E%2E/a/photo.jpg", "/static/../app.py", "/static/%2E%2E/app.py",
                 f"/api/session/{sid}/download/..%2Fcode-a.npy"):
        r = client.get(path)
        assert r.status_code in (404, 405) and b"root:" not in r.data and b"create_app" not in r.data, path
    session = Session("x" * 32, root / "s-test", 0.0)
    for name in ("../escape.png", "/etc/passwd", "a/b.png", "..", "x.png/.."):
        with pytest.raises(ValueError):
            session.file(name)


def test_closing_the_server_removes_its_folder(edit_pack, tmp_path):
    app = create_app(edit_pack, ServerOptions(steps=STEPS, alignment="center", temp_parent=tmp_path, samples={}))
    client = app.test_client()
    sid = new_session(client)
    upload(client, sid)
    app.extensions["idinvert"].close()
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- alignment

def test_without_dlib_the_centre_square_is_used_with_a_notice(make_app, monkeypatch):
    def missing():
        raise IdinvertError("face alignment needs dlib and its landmark model: pip install dlib-bin")

    monkeypatch.setattr(editor_module, "check_alignment_available", missing)
    client = make_app(alignment="auto").test_client()
    notice = client.get("/api/info").json["alignment"]["notice"]
    assert "unavailable" in notice and "pip install" in notice
    sid = new_session(client)
    r = upload(client, sid)
    assert r.json["notice"] == notice and r.json["faces"][0]["detector"] == "center"
    with pytest.raises(IdinvertError, match="needs dlib"):
        make_app(alignment="dlib")


def test_dlib_aligns_the_sample_and_the_edit_is_pasted_back(edit_pack, tmp_path):
    pytest.importorskip("skimage")
    from idinvert.align import check_alignment_available

    try:
        check_alignment_available()
    except IdinvertError as exc:
        pytest.skip(str(exc))
    app = create_app(edit_pack, ServerOptions(steps=STEPS, alignment="auto", temp_parent=tmp_path))
    try:
        client = app.test_client()
        assert client.get("/api/info").json["alignment"] == {"mode": "dlib", "notice": None, "framing": "utkface"}
        sid = new_session(client)
        r = client.post(f"/api/session/{sid}/photo/a", data={"sample": "astronaut"})
        assert r.status_code == 200 and r.json["notice"] is None
        (face,) = r.json["faces"]
        assert face["detector"] in ("hog", "cnn")
        left, top, right, bottom = face["box"]
        assert 150 < (left + right) / 2 < 300 and 50 < (top + bottom) / 2 < 200  # her face, upper middle
        client.post(f"/api/session/{sid}/a/invert", json={"face": 0})
        wait_ready(client, sid)
        photo = client.get(f"/api/session/{sid}/download/edited-photo.png",
                           query_string={"p": json.dumps({"edits": {"age": 2.0}})})
        from skimage import data

        original, edited = data.astronaut(), png_array(photo.data)
        assert edited.shape == original.shape
        np.testing.assert_array_equal(edited[400:], original[400:])  # far from the face: bit for bit
        assert not np.array_equal(edited[int(top):int(bottom), int(left):int(right)],
                                  original[int(top):int(bottom), int(left):int(right)])
    finally:
        app.extensions["idinvert"].close()


def test_a_shared_test_photo_offered_as_a_sample_is_found_and_pasted_back(edit_pack, tmp_path):
    """Tests may offer photos of ../shared/data as samples (the server itself offers only bundled ones)."""
    import csv
    import tarfile

    from conftest import shared_data
    from idinvert.align import check_alignment_available

    try:
        check_alignment_available()
    except IdinvertError as exc:
        pytest.skip(str(exc))
    with open(shared_data("celeba6k", "attributes.csv"), newline="", encoding="utf-8") as f:
        name = min(r["file"] for r in csv.DictReader(f) if r["split"] == "test")
    with tarfile.open(shared_data("celeba6k", "images.tar")) as tar:
        member = next(m for m in tar if Path(m.name).name == name)
        (tmp_path / name).write_bytes(tar.extractfile(member).read())
    app = create_app(edit_pack, ServerOptions(steps=STEPS, temp_parent=tmp_path / "server",
                                              samples={"celeba-test": tmp_path / name}))
    try:
        client = app.test_client()
        sid = new_session(client)
        r = client.post(f"/api/session/{sid}/photo/a", data={"sample": "celeba-test"})
        assert r.status_code == 200 and r.json["notice"] is None and len(r.json["faces"]) == 1
        client.post(f"/api/session/{sid}/a/invert", json={"face": 0})
        assert wait_ready(client, sid)["ready"]
        photo = client.get(f"/api/session/{sid}/download/edited-photo.png")
        assert png_array(photo.data).shape == np.asarray(Image.open(tmp_path / name)).shape
    finally:
        app.extensions["idinvert"].close()


def test_editor_needs_an_encoder(edit_pack):
    from dataclasses import replace

    with pytest.raises(IdinvertError, match="no encoder"):
        editor_module.Editor(replace(edit_pack, encoder=None))


# ----------------------------------------------------------------------------- the command line

def test_serve_rejects_bad_options_in_one_line(tiny_pack_dir, capsys):
    import socket

    from idinvert.cli import main

    assert main(["serve", "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
    assert main(["serve", "--max-upload-mb", "0"]) == 2
    assert main(["serve", "--model", "/nonexistent/pack", "--port", "0"]) == 2
    assert "no such model pack" in capsys.readouterr().err
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["serve", "--model", str(tiny_pack_dir), "--port", str(port), "--alignment", "center"]) == 2
    assert capsys.readouterr().err.strip() == (f"idinvert: error: cannot listen on 127.0.0.1:{port} "
                                               f"(Address already in use); choose another --port")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_serve_prints_its_address_answers_there_and_cleans_up(tiny_pack_dir, tmp_path, stop):
    pack = make_edit_pack(tiny_pack_dir, tmp_path / "pack")
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "idinvert", "serve", "--model", str(pack), "--port", "0",
                             "--device", "cpu", "--alignment", "center"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "idinvert editor for pack 'tiny'" in line and "http://127.0.0.1:" in line, proc.stderr.read()
        url = line.split("http://", 1)[1].split()[0]
        with urllib.request.urlopen(f"http://{url}api/info", timeout=10) as response:
            assert json.load(response)["pack"]["name"] == "tiny"
        assert any(p.name.startswith("idinvert-serve-") for p in tmp_path.iterdir())
    finally:
        proc.send_signal(stop)
        proc.wait(timeout=60)  # shutdown joins its threads (seconds each on a loaded 2-core machine)
    assert proc.returncode == 0 and "stopped" in proc.stderr.read()  # stopping is how a server ends
    assert not any(p.name.startswith("idinvert-serve-") for p in tmp_path.iterdir())  # its folder is deleted


def test_cross_site_requests_cannot_change_the_editor(client):
    """A page of another site could POST to the editor (a form or fetch with no-cors): the browser names
    that page in Origin / Sec-Fetch-Site, and such requests change nothing (issue 27)."""
    assert client.post("/api/session", headers={"Origin": "https://evil.example"}).status_code == 403
    assert client.post("/api/session", headers={"Origin": "null"}).status_code == 403
    assert client.post("/api/session", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    own = {"Host": "127.0.0.1:7860", "Origin": "http://127.0.0.1:7860", "Sec-Fetch-Site": "same-origin"}
    sid = client.post("/api/session", headers=own).json["session"]
    assert client.post(f"/api/session/{sid}/close", headers={"Origin": "http://localhost:7860",
                                                              "Host": "127.0.0.1:7860"}).status_code == 403
    assert client.get(f"/api/session/{sid}/status", headers={"Origin": "https://evil.example"}).status_code == 200
    assert upload(client, new_session(client)).status_code == 200  # programs send neither header


def test_an_upload_that_cannot_get_decode_memory_answers_503(client, monkeypatch):
    from idinvert import images

    budget = images.DecodeBudget(limit=10_000_000)
    monkeypatch.setattr(images, "DECODE_BUDGET", budget)
    monkeypatch.setattr(images, "DECODE_WAIT_SECONDS", 0.05)
    sid = new_session(client)
    with budget.reserve(9_900_000, "another upload"):  # another request is decoding a large photo
        r = upload(client, sid, data=photo_bytes(size=(300, 300)))
        assert r.status_code == 503 and "try again" in r.json["error"]
    assert upload(client, sid, data=photo_bytes(size=(300, 300))).status_code == 200
