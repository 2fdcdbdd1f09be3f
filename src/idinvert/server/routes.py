"""The editor's HTTP API: one small function per route, on the ``ServerState`` of the app that serves it
(``current_app.extensions["idinvert"]``), and the queued jobs they start. Answers other than success
are ``ApiError``s (status, readable message, optional machine code); ``app.create_app`` registers
these routes and turns the errors into JSON."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory
from PIL import Image

from ..errors import ConfigError, ImageError
from ..images import DecodeBusy, decode_image
from ..safety import parse_json
from .editor import MAX_PHOTO_SIDE, Editor, decode_photo, encode_npy, encode_png, preview_jpeg
from .jobs import Job, JobCancelled, JobQueue
from .sessions import SLOTS, Diffusion, Photo, Session
from .state import Sample, ServerState

STATIC = Path(__file__).resolve().parent / "static"
MAX_JSON_BYTES = 64 * 1024  # a JSON body (edit parameters, a face choice) is a few hundred bytes
MAX_JSON_DEPTH = 8
SLOT = "<any(a,b):slot>"

routes = Blueprint("editor", __name__)


class ApiError(Exception):
    """An answer other than success: HTTP ``status``, a readable message and an optional machine ``code``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


SESSION_ENDED = ("this editing session has ended (its tab was closed or it was idle too long); reload the page")


def state() -> ServerState:
    """The state of the app serving the current request."""
    return current_app.extensions["idinvert"]


def session_of(sid: str) -> Session:
    server = state()
    session = server.store.get(sid)
    if session is None or session.closed:
        raise ApiError(404, SESSION_ENDED, "session-ended")
    return session


def photo_of(session: Session, slot: str, *, inverted: bool = False) -> Photo:
    photo = session.photos.get(slot)
    which = "photo 1" if slot == "a" else "photo 2"
    if photo is None:
        raise ApiError(409, f"upload {which} first")
    if inverted and photo.code is None:
        raise ApiError(409, f"{which} is not inverted yet; wait for its inversion to finish")
    return photo


def parse(text: str | bytes, what: str) -> Any:
    try:
        return parse_json(text, what, max_bytes=MAX_JSON_BYTES, max_depth=MAX_JSON_DEPTH)
    except ConfigError as exc:
        raise ApiError(413 if "larger than" in str(exc) else 400, str(exc)) from None


def json_body() -> dict[str, Any]:
    if not request.content_length:
        return {}
    if request.content_length > MAX_JSON_BYTES:
        raise ApiError(413, f"the JSON body is larger than {MAX_JSON_BYTES // 1024} KB")
    if not request.is_json:
        raise ApiError(400, "send a JSON object with Content-Type: application/json")
    body = parse(request.get_data(cache=False), "the JSON body")
    if not isinstance(body, dict):
        raise ApiError(400, "send a JSON object with Content-Type: application/json")
    return body


def png(data: bytes, name: str | None = None) -> Response:
    response = Response(data, mimetype="image/png")
    if name:
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@routes.get("/")
def index():
    return send_from_directory(STATIC, "index.html")


@routes.get("/api/info")
def info():
    server = state()
    return jsonify({**server.editor.describe(), "samples": sorted(server.samples),
                    "max_upload_bytes": server.options.max_upload_bytes, "max_pixels": server.options.max_pixels,
                    "idle_timeout": server.options.idle_timeout})


@routes.post("/api/session")
def new_session():
    server = state()
    return jsonify(session=server.store.create().id), 201


@routes.route("/api/session/<sid>/close", methods=["POST"])
@routes.route("/api/session/<sid>", methods=["DELETE"])
def close_session(sid: str):
    server = state()
    server.store.close(sid)  # also for unknown ids: a beacon cannot act on an answer
    return "", 204


@routes.post(f"/api/session/<sid>/photo/{SLOT}")
def upload(sid: str, slot: str):
    server = state()
    session = session_of(sid)
    upload = request.files.get("file")
    sample = request.form.get("sample")
    data: bytes | None = None
    if upload is not None and (upload.filename or upload.content_length or upload.mimetype):
        data = upload.read()
        try:
            image = decode_photo(data, max_pixels=server.options.max_pixels, max_side=server.options.max_photo_side)
        except DecodeBusy as exc:  # concurrent decodes share images.DECODE_BUDGET
            raise ApiError(503, str(exc)) from None
        except ImageError as exc:
            raise ApiError(415, str(exc)) from None
    elif sample:
        if sample not in server.samples:
            raise ApiError(400, f"unknown sample {sample[:40]!r}; choose one of: {', '.join(server.samples)}")
        image = _load_sample(server.samples[sample])
    else:
        raise ApiError(400, "send a photo in the form field 'file', or a sample name in 'sample'")
    faces, notice = server.editor.find_faces(image)
    preview = preview_jpeg(image, faces)
    with session.lock:
        if session.closed:
            raise ApiError(404, SESSION_ENDED, "session-ended")
        old = session.photos.get(slot)
        for job in (old.job, old.refine_job) if old is not None else ():
            if job is not None:
                server.queue.cancel(job)
        _drop_diffusion(session, server.queue)
        for stale in (f"photo-{slot}.upload", f"code-{slot}.npy"):
            session.file(stale).unlink(missing_ok=True)
        if data is not None:  # the upload as sent; deleted with the session
            session.file(f"photo-{slot}.upload").write_bytes(data)
        photo = Photo(image, faces, notice, preview, version=(old.version + 1 if old else 1))
        session.photos[slot] = photo
    return jsonify(slot=slot, width=image.width, height=image.height, notice=notice, version=photo.version,
                   faces=[{"index": k, "box": [round(v, 1) for v in f.box], "detector": f.detector,
                           "score": round(f.score, 3)} for k, f in enumerate(faces)])


@routes.post(f"/api/session/<sid>/{SLOT}/invert")
def start_inversion(sid: str, slot: str):
    server = state()
    session = session_of(sid)
    body = json_body()
    with session.lock:
        photo = photo_of(session, slot)
        face = body.get("face", 0)
        if isinstance(face, bool) or not isinstance(face, int) or not 0 <= face < len(photo.faces):
            raise ApiError(400, f"face must be a number from 0 to {len(photo.faces) - 1}")
        if photo.job is not None:
            server.queue.cancel(photo.job)
        if photo.refine_job is not None:
            server.queue.cancel(photo.refine_job)
        photo.face, photo.code, photo.reconstruction = face, None, None
        photo.tuned, photo.refine_job, photo.refine_seconds = None, None, None
        photo.readings, photo.tuned_readings, photo.amount_cache = None, None, {}
        photo.version += 1
        photo.job = Job("invert", session.id, server.editor.steps,
                        run=partial(_run_inversion, server.editor, session, slot, photo, photo.faces[face].image))
        server.queue.submit(photo.job)
        return jsonify(job=_job_json(photo.job, server.queue)), 202


@routes.post(f"/api/session/<sid>/{SLOT}/refine")
def start_refinement(sid: str, slot: str):
    """Tune the generator for the inverted face ("faithful (slower)"); a no-op once tuned."""
    server = state()
    session = session_of(sid)
    with session.lock:
        photo = photo_of(session, slot, inverted=True)
        if photo.tuned is None and (photo.refine_job is None or not photo.refine_job.active):
            photo.refine_job = Job("refine", session.id, server.editor.refine_steps,
                                   run=partial(_run_refinement, server.editor, session, slot, photo, photo.code,
                                               photo.faces[photo.face].image))
            server.queue.submit(photo.refine_job)
        job = _job_json(photo.refine_job, server.queue) if photo.refine_job else None
        return jsonify(job=job, faithful=photo.tuned is not None), 202


@routes.get("/api/session/<sid>/status")
def status(sid: str):
    server = state()
    session = session_of(sid)
    with session.lock:
        slots = {slot: {"faces": len(p.faces), "face": p.face, "ready": p.code is not None,
                        "version": p.version, "notice": p.notice,
                        "job": _job_json(p.job, server.queue) if p.job else None,
                        "faithful": p.tuned is not None, "refine_seconds": p.refine_seconds,
                        "refine": _job_json(p.refine_job, server.queue) if p.refine_job else None,
                        "readings": p.readings, "faithful_readings": p.tuned_readings}
                 for slot, p in session.photos.items()}
        d = session.diffusion
        diffusion = None if d is None else {"target": d.target, "ready": d.result is not None,
                                            "job": _job_json(d.job, server.queue)}
    return jsonify(slots=slots, diffusion=diffusion)


@routes.get(f"/api/session/<sid>/{SLOT}/photo.jpg")
def photo_preview(sid: str, slot: str):
    photo = photo_of(session_of(sid), slot)
    return Response(photo.preview, mimetype="image/jpeg")


@routes.get(f"/api/session/<sid>/{SLOT}/face/<int:index>.png")
def face_crop(sid: str, slot: str, index: int):
    photo = photo_of(session_of(sid), slot)
    if not 0 <= index < len(photo.faces):
        raise ApiError(404, f"the photo has {len(photo.faces)} face(s); there is no face {index}")
    return png(encode_png(photo.faces[index].image, compress_level=1))


@routes.get(f"/api/session/<sid>/{SLOT}/reconstruction.png")
def reconstruction(sid: str, slot: str):
    photo = photo_of(session_of(sid), slot, inverted=True)
    return png(encode_png(photo.reconstruction, compress_level=1))


def edited(session: Session, params_json: Any, found: dict | None = None) -> tuple[Photo, Any, Any]:
    """Photo 1, the composed code and its image; ``found`` receives what each amount's search found."""
    server = state()
    params = server.editor.parse_params(params_json)
    with session.lock:
        first = photo_of(session, "a", inverted=True)
        own_tuned = first.tuned if params.faithful else None  # the images the amounts are measured on
        code, cache = first.code, first.amount_cache
    # the searches run outside the lock (status polls go on); a new inversion replaces the cache
    params, amounts = server.editor.resolve_amounts(params, code, own_tuned, cache)
    if found is not None:
        found.update(amounts)
    with session.lock:
        first = photo_of(session, "a", inverted=True)
        second = session.photos.get("b")
        if params.needs_second and (second is None or second.code is None):
            raise ApiError(409, "interpolation and style mixing need photo 2; upload and invert it first")
        code = server.editor.compose(first.code, params, second.code if second is not None else None)
        tuned = server.editor.tuned_for(params, first.tuned, second.tuned if second is not None else None)
    return first, code, server.editor.render(code, tuned)


@routes.post("/api/session/<sid>/render")
def render(sid: str):
    session = session_of(sid)
    began = time.perf_counter()
    found: dict = {}
    _, _, image = edited(session, json_body(), found)
    data = encode_png(image, compress_level=1)
    response = png(data)
    response.headers["X-Render-Ms"] = f"{(time.perf_counter() - began) * 1000:.1f}"
    if found:  # per attribute edited in units: the distance found and the value reached
        response.headers["X-Edit-Amounts"] = json.dumps(found, separators=(",", ":"))
    return response


@routes.get("/api/session/<sid>/download/<any('edited-photo.png','edited-face.png','code.npy'):name>")
def download(sid: str, name: str):
    server = state()
    session = session_of(sid)
    try:
        params = parse(request.args.get("p") or "{}", "the parameter p")
    except ApiError:
        raise ApiError(400, "the parameter p must be JSON edit parameters (small, not deeply nested)") from None
    photo, code, image = edited(session, params)
    if name == "code.npy":
        response = Response(encode_npy(code), mimetype="application/octet-stream")
        response.headers["Content-Disposition"] = 'attachment; filename="code.npy"'
        return response
    if name == "edited-face.png":
        return png(encode_png(image), name)
    return png(encode_png(server.editor.paste(photo.image, image, photo.crop)), name)


@routes.post("/api/session/<sid>/diffuse")
def start_diffusion(sid: str):
    server = state()
    session = session_of(sid)
    body = json_body()
    target = body.get("target", "a")
    if target not in SLOTS:
        raise ApiError(400, "target must be 'a' (photo 1) or 'b' (photo 2)")
    crop = server.editor.check_crop(body.get("crop_size"), body.get("center_x"), body.get("center_y"))
    with session.lock:
        photos = [photo_of(session, s) for s in (target, "b" if target == "a" else "a")]
        if any(p.crop is None for p in photos):
            raise ApiError(409, "choose a face in both photos first")
        _drop_diffusion(session, server.queue)
        job = Job("diffuse", session.id, server.editor.steps, run=lambda job: None)
        diffusion = session.diffusion = Diffusion(job, target)
        job.run = partial(_run_diffusion, server.editor, session, diffusion, photos[0].crop.image,
                          photos[1].crop.image, crop)
        server.queue.submit(job)
        return jsonify(job=_job_json(job, server.queue)), 202


@routes.get("/api/session/<sid>/diffusion/<any(stitched,result):kind>.png")
def diffusion_image(sid: str, kind: str):
    session = session_of(sid)
    with session.lock:
        d = session.diffusion
        image = None if d is None else (d.stitched if kind == "stitched" else d.result)
    if image is None:
        raise ApiError(409, "no diffusion result yet; start one and wait for it to finish")
    return png(encode_png(image), f"diffusion-{kind}.png" if request.args.get("download") else None)


def _load_sample(sample: Sample) -> Image.Image:
    return sample() if callable(sample) else decode_image(sample, max_side=MAX_PHOTO_SIDE)


def _drop_diffusion(session: Session, queue: JobQueue) -> None:
    if session.diffusion is not None:
        queue.cancel(session.diffusion.job)
        session.diffusion = None


def _job_json(job: Job, queue: JobQueue) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "state": job.state, "step": job.step, "steps": job.steps,
            "ahead": queue.ahead(job) if job.state == "queued" else 0, "message": job.message}


def _run_inversion(editor: Editor, session: Session, slot: str, photo: Photo, face, job: Job) -> None:
    code, reconstruction = editor.invert(face, progress=job.report)
    readings = editor.readings(code) if slot == "a" else None
    with session.lock:
        if session.closed or session.photos.get(slot) is not photo or photo.job is not job:
            raise JobCancelled()
        photo.code, photo.reconstruction, photo.readings = code, reconstruction, readings
        photo.amount_cache = {}
        photo.version += 1
        session.file(f"code-{slot}.npy").write_bytes(encode_npy(code))


def _run_refinement(editor: Editor, session: Session, slot: str, photo: Photo, code, face, job: Job) -> None:
    tuned, seconds = editor.refine(face, code, progress=job.report)
    readings = editor.readings(code, tuned) if slot == "a" else None
    with session.lock:
        if session.closed or session.photos.get(slot) is not photo or photo.refine_job is not job:
            raise JobCancelled()
        photo.tuned, photo.refine_seconds, photo.tuned_readings = tuned, seconds, readings


def _run_diffusion(editor: Editor, session: Session, diffusion: Diffusion, target, context,
                   crop: tuple[int, int, int], job: Job) -> None:
    size, cx, cy = crop
    stitched, result = editor.diffuse(target, context, crop_size=size, center_x=cx, center_y=cy,
                                      progress=job.report)
    with session.lock:
        if session.closed or session.diffusion is not diffusion:
            raise JobCancelled()
        diffusion.stitched, diffusion.result = stitched, result
