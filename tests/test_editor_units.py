"""The web editor in the attribute's units: sliders in years and per cent with plain names, centred on what
the predictor reads on the face, mapped to distances on the server (cached per photo), and pivotal tuning
on by default. The tiny pack's predictor reads brightness (tests/units_pack.py)."""

from __future__ import annotations

import json
import time

import numpy as np
import torch
import pytest

pytest.importorskip("flask", reason="the web editor needs Flask: pip install 'flask>=3.0,<4'")

from idinvert.pack import load_pack  # noqa: E402
from idinvert.server import ServerOptions, create_app  # noqa: E402
from idinvert.server import editor as editor_module  # noqa: E402
from test_server import inverted_session, png_array, render  # noqa: E402
from units_pack import make_units_pack  # noqa: E402


@pytest.fixture(scope="module")
def units_pack(tiny_pack_dir, tmp_path_factory):
    return load_pack(make_units_pack(tiny_pack_dir, tmp_path_factory.mktemp("editor-units") / "tiny-units"))


@pytest.fixture
def app(units_pack, tmp_path):
    app = create_app(units_pack, ServerOptions(steps=2, alignment="center", temp_parent=tmp_path, samples={}))
    app.extensions["idinvert"].editor.refine_steps = 3
    yield app
    app.extensions["idinvert"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def readings(client, sid) -> dict:
    return client.get(f"/api/session/{sid}/status").json["slots"]["a"]["readings"]


def test_info_names_the_sliders_plainly_and_gives_their_units(client):
    info = client.get("/api/info").json
    sliders = {a["name"]: a for a in info["attributes"]}
    assert {n: (a["label"], a["unit"]) for n, a in sliders.items()} == {
        "age": ("Age", "years"), "gender": ("Gender (male)", "percent"), "smile": ("Smile", "percent"),
        "eyeglasses": ("Glasses", "percent"), "pose": ("Pose", None)}
    assert sliders["pose"]["min"] == -3 and sliders["pose"]["max"] == 3  # the fields there were, unchanged
    assert info["refine"] == {"steps": 3, "default": True}
    assert info["amounts"] == {"age_range": 30.0, "percent_range": [5.0, 95.0]}


def test_the_page_tunes_by_default(client):
    page = client.get("/").data.decode()
    assert 'id="faithful" checked' in page
    script = client.get("/static/editor.js").data.decode()
    assert "X-Edit-Amounts" in script and "data-unit" in script and "attribute.label" in script


def test_a_slider_in_years_is_a_distance_found_on_the_server_and_cached(client, monkeypatch):
    sid = inverted_session(client)
    values = readings(client, sid)
    assert set(values) == {"age", "gender", "smile", "eyeglasses"}
    assert 0 < values["age"] < 100 and all(0 < values[k] < 100 for k in ("gender", "smile", "eyeglasses"))
    calls = []
    solve = editor_module.solve_distances
    monkeypatch.setattr(editor_module, "solve_distances", lambda *a, **k: calls.append(1) or solve(*a, **k))
    unedited = render(client, sid)
    target = round(values["age"] - 10)
    r = client.post(f"/api/session/{sid}/render", json={"amounts": {"age": target}})
    assert r.status_code == 200
    found = json.loads(r.headers["X-Edit-Amounts"])["age"]
    assert found["target"] == target and abs(found["reached"] - target) <= 0.5 and found["reachable"]
    assert found["distance"] < 0 and abs(found["start"] - values["age"]) < 0.5
    assert np.abs(png_array(r.data).astype(int) - unedited).max() > 1
    # the same slider value again: no new search, the same picture; the download agrees
    again = client.post(f"/api/session/{sid}/render", json={"amounts": {"age": target}})
    assert len(calls) == 1 and again.data == r.data
    p = json.dumps({"amounts": {"age": target}})
    assert client.get(f"/api/session/{sid}/download/edited-face.png", query_string={"p": p}).status_code == 200
    # at the person's own value the edit is no edit
    same = client.post(f"/api/session/{sid}/render", json={"amounts": {"smile": round(values["smile"])}})
    assert json.loads(same.headers["X-Edit-Amounts"])["smile"]["distance"] == 0
    assert np.array_equal(png_array(same.data), unedited)
    assert "X-Edit-Amounts" not in client.post(f"/api/session/{sid}/render", json={}).headers


@pytest.mark.parametrize("amounts, message", [
    ({"pose": 10}, "has no units"),
    ({"wings": 10}, "has no units"),
    ({"age": 500}, "use 0 to 120 years"),
    ({"smile": 2}, "use 5 to 95 %"),
    ({"smile": "high"}, "finite number"),
    ([1, 2], "must map attribute names"),
])
def test_bad_amounts_are_readable_400s(client, amounts, message):
    sid = inverted_session(client)
    r = client.post(f"/api/session/{sid}/render", json={"amounts": amounts})
    assert r.status_code == 400 and message in r.json["error"]


def test_an_attribute_as_distance_and_amount_at_once_is_refused(client):
    sid = inverted_session(client)
    r = client.post(f"/api/session/{sid}/render", json={"edits": {"age": 1.0}, "amounts": {"age": 40}})
    assert r.status_code == 400 and "both as a distance" in r.json["error"]
    assert client.post(f"/api/session/{sid}/render", json={"edits": {"pose": 1.0}, "amounts": {"age": 40}}
                       ).status_code == 200


def test_faithful_readings_come_with_the_tuning_and_amounts_read_the_tuned_images(client):
    sid = inverted_session(client)
    assert client.post(f"/api/session/{sid}/a/refine").status_code == 202
    deadline, info = time.monotonic() + 60, {}
    while time.monotonic() < deadline and not info.get("faithful"):
        info = client.get(f"/api/session/{sid}/status").json["slots"]["a"]
        time.sleep(0.05)
    assert info["faithful"] and set(info["faithful_readings"]) == set(info["readings"])
    tuned_age = info["faithful_readings"]["age"]
    r = client.post(f"/api/session/{sid}/render", json={"faithful": True, "amounts": {"age": round(tuned_age) + 5}})
    found = json.loads(r.headers["X-Edit-Amounts"])["age"]
    assert abs(found["start"] - tuned_age) < 0.5 and abs(found["reached"] - (round(tuned_age) + 5)) <= 0.5
    # a new inversion forgets the tuning, its readings and the searches of the old code
    assert client.post(f"/api/session/{sid}/a/invert", json={"face": 0}).status_code == 202
    slot = client.get(f"/api/session/{sid}/status").json["slots"]["a"]
    assert slot["faithful"] is False and slot["faithful_readings"] is None


def test_tuning_and_tuned_renders_use_their_own_copies_of_the_generator(app):
    """functional_call swaps a module's weights while it runs: the worker's tuning and the requests' tuned
    renders must not swap the weights of the generator that other threads render with."""
    import threading

    import torch

    editor = app.extensions["idinvert"].editor
    shared = editor.pack.generator
    assert editor._tuning_pack.generator is not shared and editor._tuned_generator is not shared
    code = shared.mean_code()[None]
    face = editor.render(code)
    errors = []

    def tune():
        try:
            tuned, _ = editor.refine(face * 0.5, code)
            editor.render(code, tuned)
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    before = {k: v.clone() for k, v in shared.state_dict().items()}
    worker = threading.Thread(target=tune)
    worker.start()
    while worker.is_alive():  # plain renders on the shared generator meanwhile
        editor.render(code)
    worker.join()
    assert errors == []
    assert all(torch.equal(before[k], v) for k, v in shared.state_dict().items())
    assert not any(p.requires_grad for p in shared.parameters())


@pytest.fixture(scope="module")
def local_units_pack(tiny_pack_dir, tmp_path_factory):
    """The units pack with a framing and a local smile (the editor moves each face by its own step)."""
    from idinvert.pack import update_pack

    folder = make_units_pack(tiny_pack_dir, tmp_path_factory.mktemp("editor-local") / "tiny-local")
    framing = {"name": "test", "rule": "similarity", "size": 32, "eye_left": [0.3, 0.35], "eye_right": [0.7, 0.35],
               "mouth": [0.5, 0.7], "nose": [0.5, 0.55]}
    update_pack(folder, config_updates={"framing": framing, "local_edits": {
        "smile": {"around": "mouth", "width": 1.0, "height": 0.6, "stiffness": 0.01}}})
    return load_pack(folder)


def test_a_local_smile_slider_uses_the_faces_own_step_measured_once_per_generator(local_units_pack, tmp_path,
                                                                                 monkeypatch):
    app = create_app(local_units_pack, ServerOptions(steps=2, alignment="center", temp_parent=tmp_path, samples={}))
    app.extensions["idinvert"].editor.refine_steps = 3
    client = app.test_client()
    try:
        calls = []
        localized = editor_module.localized
        monkeypatch.setattr(editor_module, "localized", lambda *a, **k: calls.append(a[4] is not None if len(a) > 4
                                                                                      else False) or localized(*a, **k))
        sid = inverted_session(client)
        smile = readings(client, sid)["smile"]
        target = min(95, round(smile) + 20)
        r = client.post(f"/api/session/{sid}/render", json={"amounts": {"smile": target}})
        found = json.loads(r.headers["X-Edit-Amounts"])["smile"]
        assert abs(found["reached"] - target) <= 1 and found["reachable"] and found["distance"] > 0
        # what the page shows is the face moved by d along its own step: its reading is the one found
        editor = app.extensions["idinvert"].editor
        shown = editor.readers["smile"](torch.from_numpy(png_array(r.data).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1)
        assert abs(100 * float(shown[0]) - found["reached"]) < 3
        # an age slider alongside is still a boundary move; the smile's step is measured once per photo
        both = client.post(f"/api/session/{sid}/render", json={"amounts": {"smile": target, "age": 40}})
        assert both.status_code == 200 and calls == [False]
        # tuned: the step is measured again, through the tuned generator
        assert client.post(f"/api/session/{sid}/a/refine").status_code == 202
        deadline, info = time.monotonic() + 60, {}
        while time.monotonic() < deadline and not info.get("faithful"):
            info = client.get(f"/api/session/{sid}/status").json["slots"]["a"]
            time.sleep(0.05)
        tuned = client.post(f"/api/session/{sid}/render", json={"faithful": True, "amounts": {"smile": target}})
        found = json.loads(tuned.headers["X-Edit-Amounts"])["smile"]
        assert abs(found["reached"] - target) <= 1 and calls == [False, True]
    finally:
        app.extensions["idinvert"].close()
