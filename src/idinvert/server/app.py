"""The Flask app of ``idinvert serve``: a JSON and image API over ``Editor`` plus the static page.

Every endpoint below ``/api/session/<id>/`` belongs to one browser tab (a session). Errors are
JSON ``{"error": "<one readable sentence>"}`` with a fitting status: 400 bad input (also a JSON
body nested too deeply or a foreign ``Host``), 404 unknown or ended session (also one closed to
make room for a new tab), 403 a state-changing request sent by another web site (its ``Origin``),
409 a step is missing (no photo or inversion yet), 413 upload or JSON body too large, 415 not an
image, 503 the server is busy decoding other large photos (try again).
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

from flask import Flask, Request, Response, jsonify, request, send_from_directory
from PIL import Image
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, get_sockaddr, select_address_family
from werkzeug.serving import make_server as _make_server

from ..errors import ConfigError, IdinvertError, ImageError
from ..images import MAX_PIXELS, DecodeBusy, decode_image
from ..engine.inversion import MAX_STEPS
from ..safety import check_float, check_int, parse_json
from ..pack import ModelPack
from .editor import MAX_PHOTO_SIDE, Editor, decode_photo, encode_npy, encode_png, preview_jpeg
from .jobs import Job, JobCancelled, JobQueue
from .sessions import SLOTS, Diffusion, Photo, Session, SessionStore

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MAX_UPLOAD_MB = 1024.0
MAX_IDLE_SECONDS = 7 * 24 * 3600.0  # a week
MAX_JSON_BYTES = 64 * 1024  # a JSON body (edit parameters, a face choice) is a few hundred bytes
MAX_JSON_DEPTH = 8
HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>\d{1,5}))?")
log = logging.getLogger("idinvert.server")

Sample = str | os.PathLike | Callable[[], Image.Image]


@dataclass(frozen=True)
class ServerOptions:
    """Settings of one editor server; the defaults are those of ``idinvert serve``."""

    steps: int = 100  # T, Adam steps of each in-domain inversion and diffusion (the paper's 100)
    max_upload_mb: float = 20.0  # larger uploads are refused with HTTP 413
    max_pixels: int = MAX_PIXELS  # photos with more pixels are refused before decoding
    max_photo_side: int = MAX_PHOTO_SIDE  # larger photos are shrunk to this side while decoding
    idle_timeout: float = 1800.0  # seconds without a request before a session and its files are deleted
    reap_interval: float = 30.0  # seconds between the reaper's looks for idle sessions
    max_sessions: int = 32  # sessions kept at once; a new tab closes the least recently used one
    alignment: str = "auto"  # auto (dlib when installed, else the centre square) | dlib | center
    samples: Mapping[str, Sample] | None = None  # name → photo file or loader; None = the bundled samples
    temp_parent: str | os.PathLike | None = None  # where the server's temporary folder is made; None = system's
    trusted_hosts: tuple[str, ...] | None = LOOPBACK_NAMES  # Host headers served (DNS rebinding); None = any

    def __post_init__(self) -> None:
        # Finite limits only: an infinite timeout or upload size would keep memory and files forever.
        check_float(self.max_upload_mb, "max_upload_mb", 0.0, MAX_UPLOAD_MB, low_open=True)
        check_float(self.idle_timeout, "idle_timeout", 0.0, MAX_IDLE_SECONDS, low_open=True, hint="seconds")
        check_float(self.reap_interval, "reap_interval", 0.0, MAX_IDLE_SECONDS, low_open=True, hint="seconds")
        check_int(self.max_sessions, "max_sessions", 1, 10_000)
        check_int(self.max_pixels, "max_pixels", 1, MAX_PIXELS)
        check_int(self.max_photo_side, "max_photo_side", 64, 16384)
        check_int(self.steps, "steps", 0, MAX_STEPS)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def default_samples() -> dict[str, Sample]:
    """Photos offered without an upload: scikit-image's astronaut (Eileen Collins, NASA, public domain)."""
    if importlib.util.find_spec("skimage") is None:
        return {}

    def astronaut() -> Image.Image:
        from skimage import data

        return Image.fromarray(data.astronaut())

    return {"astronaut": astronaut}


class ApiError(Exception):
    """An answer other than success: HTTP ``status``, a readable message and an optional machine ``code``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


SESSION_ENDED = ("this editing session has ended (its tab was closed or it was idle too long); reload the page")


@dataclass(eq=False)
class ServerState:
    """The editor, the job queue and the sessions behind one app (``app.extensions["idinvert"]``)."""

    editor: Editor
    options: ServerOptions
    samples: dict[str, Sample]
    queue: JobQueue = field(default_factory=JobQueue)
    store: SessionStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = SessionStore(idle_timeout=self.options.idle_timeout, max_sessions=self.options.max_sessions,
                                  parent=self.options.temp_parent, on_close=lambda s: self.queue.cancel_owner(s.id))
        self.store.start_reaper(self.options.reap_interval)
        atexit.register(self.close)

    def close(self) -> None:
        """Stop the worker and the reaper and delete every session's files."""
        self.queue.close()
        self.store.shutdown()
        atexit.unregister(self.close)


def create_app(pack: ModelPack, options: ServerOptions | None = None) -> Flask:
    """The editor app for ``pack``, whose networks it freezes (eval mode, no parameter gradients).

    Starts the worker and reaper threads and makes the server's temporary folder; call
    ``app.extensions["idinvert"].close()`` to stop them and delete the folder (also done at exit).
    """
    options = options or ServerOptions()
    editor = Editor(pack, steps=options.steps, alignment=options.alignment)
    state = ServerState(editor, options, dict(options.samples) if options.samples is not None else default_samples())
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.request_class = _request_class(state.store.root, options.max_upload_bytes)
    app.config.update(MAX_CONTENT_LENGTH=options.max_upload_bytes)
    app.extensions["idinvert"] = state
    _register_handlers(app, options)
    _register_routes(app, state)
    return app


def _request_class(spool_dir: Path, limit: int) -> type[Request]:
    class EditorRequest(Request):
        """Uploads are buffered in memory up to the limit, and never spill outside the server's folder."""

        def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
            return tempfile.SpooledTemporaryFile(max_size=limit + 1, dir=spool_dir)

    return EditorRequest


def host_allowed(header: str | None, trusted: tuple[str, ...] | None) -> bool:
    """Whether a ``Host`` header names one of ``trusted`` (IPv6 in brackets, any port); DNS rebinding
    guard. werkzeug's own check cannot match IPv6 addresses, so this one is used for every host."""
    if trusted is None:
        return True
    m = HOST.fullmatch(header or "")
    if m is None:
        return False
    name = (m["v6"] or m["name"]).lower()
    return name in {t.strip("[]").lower() for t in trusted}


STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")


def same_origin(origin: str | None, fetch_site: str | None, host: str | None) -> bool:
    """Whether a state-changing request may come from where it says it comes from: a browser names the
    page that sent it (``Origin``, ``Sec-Fetch-Site``), and it must be the editor's own page, so that a
    web site the user visits cannot drive the editor (cross-site request forgery). Requests without
    those headers come from programs, not web pages, and pass."""
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        return False
    if origin is None:
        return True
    scheme, sep, rest = origin.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and host is not None and rest.lower() == host.lower()


def _register_handlers(app: Flask, options: ServerOptions) -> None:
    @app.before_request
    def check_host():
        if not host_allowed(request.headers.get("Host"), options.trusted_hosts):
            return jsonify(error="unknown Host header; open the editor at the address it printed"), 400
        if request.method in STATE_CHANGING and not same_origin(
                request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), request.headers.get("Host")):
            return jsonify(error="a request from another web site; use the editor's own page"), 403

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        body = {"error": str(exc)} | ({"code": exc.code} if exc.code else {})
        return jsonify(body), exc.status

    @app.errorhandler(IdinvertError)
    def user_error(exc: IdinvertError):
        return jsonify(error=str(exc)), 400

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge):
        return jsonify(error=f"the upload is larger than {options.max_upload_mb:g} MB; use a smaller photo"), 413

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/api/"):
            return jsonify(error=exc.description), exc.code
        return exc

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'")
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response


def _register_routes(app: Flask, state: ServerState) -> None:
    editor, store, queue, options = state.editor, state.store, state.queue, state.options
    slot_rule = "<any(a,b):slot>"

    def session_of(sid: str) -> Session:
        session = store.get(sid)
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

    @app.get("/")
    def index():
        return send_from_directory(STATIC, "index.html")

    @app.get("/api/info")
    def info():
        return jsonify({**editor.describe(), "samples": sorted(state.samples),
                        "max_upload_bytes": options.max_upload_bytes, "max_pixels": options.max_pixels,
                        "idle_timeout": options.idle_timeout})

    @app.post("/api/session")
    def new_session():
        return jsonify(session=store.create().id), 201

    @app.route("/api/session/<sid>/close", methods=["POST"])
    @app.route("/api/session/<sid>", methods=["DELETE"])
    def close_session(sid: str):
        store.close(sid)  # also for unknown ids: a beacon cannot act on an answer
        return "", 204

    @app.post(f"/api/session/<sid>/photo/{slot_rule}")
    def upload(sid: str, slot: str):
        session = session_of(sid)
        upload = request.files.get("file")
        sample = request.form.get("sample")
        data: bytes | None = None
        if upload is not None and (upload.filename or upload.content_length or upload.mimetype):
            data = upload.read()
            try:
                image = decode_photo(data, max_pixels=options.max_pixels, max_side=options.max_photo_side)
            except DecodeBusy as exc:  # concurrent decodes share images.DECODE_BUDGET
                raise ApiError(503, str(exc)) from None
            except ImageError as exc:
                raise ApiError(415, str(exc)) from None
        elif sample:
            if sample not in state.samples:
                raise ApiError(400, f"unknown sample {sample[:40]!r}; choose one of: {', '.join(state.samples)}")
            image = _load_sample(state.samples[sample])
        else:
            raise ApiError(400, "send a photo in the form field 'file', or a sample name in 'sample'")
        faces, notice = editor.find_faces(image)
        preview = preview_jpeg(image, faces)
        with session.lock:
            if session.closed:
                raise ApiError(404, SESSION_ENDED, "session-ended")
            old = session.photos.get(slot)
            for job in (old.job, old.refine_job) if old is not None else ():
                if job is not None:
                    queue.cancel(job)
            _drop_diffusion(session, queue)
            for stale in (f"photo-{slot}.upload", f"code-{slot}.npy"):
                session.file(stale).unlink(missing_ok=True)
            if data is not None:  # the upload as sent; deleted with the session
                session.file(f"photo-{slot}.upload").write_bytes(data)
            photo = Photo(image, faces, notice, preview, version=(old.version + 1 if old else 1))
            session.photos[slot] = photo
        return jsonify(slot=slot, width=image.width, height=image.height, notice=notice, version=photo.version,
                       faces=[{"index": k, "box": [round(v, 1) for v in f.box], "detector": f.detector,
                               "score": round(f.score, 3)} for k, f in enumerate(faces)])

    @app.post(f"/api/session/<sid>/{slot_rule}/invert")
    def start_inversion(sid: str, slot: str):
        session = session_of(sid)
        body = json_body()
        with session.lock:
            photo = photo_of(session, slot)
            face = body.get("face", 0)
            if isinstance(face, bool) or not isinstance(face, int) or not 0 <= face < len(photo.faces):
                raise ApiError(400, f"face must be a number from 0 to {len(photo.faces) - 1}")
            if photo.job is not None:
                queue.cancel(photo.job)
            if photo.refine_job is not None:
                queue.cancel(photo.refine_job)
            photo.face, photo.code, photo.reconstruction = face, None, None
            photo.tuned, photo.refine_job, photo.refine_seconds = None, None, None
            photo.version += 1
            photo.job = Job("invert", session.id, editor.steps,
                            run=partial(_run_inversion, editor, session, slot, photo, photo.faces[face].image))
            queue.submit(photo.job)
            return jsonify(job=_job_json(photo.job, queue)), 202

    @app.post(f"/api/session/<sid>/{slot_rule}/refine")
    def start_refinement(sid: str, slot: str):
        """Tune the generator for the inverted face ("faithful (slower)"); a no-op once tuned."""
        session = session_of(sid)
        with session.lock:
            photo = photo_of(session, slot, inverted=True)
            if photo.tuned is None and (photo.refine_job is None or not photo.refine_job.active):
                photo.refine_job = Job("refine", session.id, editor.refine_steps,
                                       run=partial(_run_refinement, editor, session, slot, photo, photo.code,
                                                   photo.faces[photo.face].image))
                queue.submit(photo.refine_job)
            job = _job_json(photo.refine_job, queue) if photo.refine_job else None
            return jsonify(job=job, faithful=photo.tuned is not None), 202

    @app.get("/api/session/<sid>/status")
    def status(sid: str):
        session = session_of(sid)
        with session.lock:
            slots = {slot: {"faces": len(p.faces), "face": p.face, "ready": p.code is not None,
                            "version": p.version, "notice": p.notice,
                            "job": _job_json(p.job, queue) if p.job else None,
                            "faithful": p.tuned is not None, "refine_seconds": p.refine_seconds,
                            "refine": _job_json(p.refine_job, queue) if p.refine_job else None}
                     for slot, p in session.photos.items()}
            d = session.diffusion
            diffusion = None if d is None else {"target": d.target, "ready": d.result is not None,
                                                "job": _job_json(d.job, queue)}
        return jsonify(slots=slots, diffusion=diffusion)

    @app.get(f"/api/session/<sid>/{slot_rule}/photo.jpg")
    def photo_preview(sid: str, slot: str):
        photo = photo_of(session_of(sid), slot)
        return Response(photo.preview, mimetype="image/jpeg")

    @app.get(f"/api/session/<sid>/{slot_rule}/face/<int:index>.png")
    def face_crop(sid: str, slot: str, index: int):
        photo = photo_of(session_of(sid), slot)
        if not 0 <= index < len(photo.faces):
            raise ApiError(404, f"the photo has {len(photo.faces)} face(s); there is no face {index}")
        return png(encode_png(photo.faces[index].image, compress_level=1))

    @app.get(f"/api/session/<sid>/{slot_rule}/reconstruction.png")
    def reconstruction(sid: str, slot: str):
        photo = photo_of(session_of(sid), slot, inverted=True)
        return png(encode_png(photo.reconstruction, compress_level=1))

    def edited(session: Session, params_json: Any) -> tuple[Photo, Any, Any]:
        params = editor.parse_params(params_json)
        with session.lock:
            first = photo_of(session, "a", inverted=True)
            second = session.photos.get("b")
            if params.needs_second and (second is None or second.code is None):
                raise ApiError(409, "interpolation and style mixing need photo 2; upload and invert it first")
            code = editor.compose(first.code, params, second.code if second is not None else None)
            tuned = editor.tuned_for(params, first.tuned, second.tuned if second is not None else None)
        return first, code, editor.render(code, tuned)

    @app.post("/api/session/<sid>/render")
    def render(sid: str):
        session = session_of(sid)
        began = time.perf_counter()
        _, _, image = edited(session, json_body())
        data = encode_png(image, compress_level=1)
        response = png(data)
        response.headers["X-Render-Ms"] = f"{(time.perf_counter() - began) * 1000:.1f}"
        return response

    @app.get("/api/session/<sid>/download/<any('edited-photo.png','edited-face.png','code.npy'):name>")
    def download(sid: str, name: str):
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
        return png(encode_png(editor.paste(photo.image, image, photo.crop)), name)

    @app.post("/api/session/<sid>/diffuse")
    def start_diffusion(sid: str):
        session = session_of(sid)
        body = json_body()
        target = body.get("target", "a")
        if target not in SLOTS:
            raise ApiError(400, "target must be 'a' (photo 1) or 'b' (photo 2)")
        crop = editor.check_crop(body.get("crop_size"), body.get("center_x"), body.get("center_y"))
        with session.lock:
            photos = [photo_of(session, s) for s in (target, "b" if target == "a" else "a")]
            if any(p.crop is None for p in photos):
                raise ApiError(409, "choose a face in both photos first")
            _drop_diffusion(session, queue)
            job = Job("diffuse", session.id, editor.steps, run=lambda job: None)
            diffusion = session.diffusion = Diffusion(job, target)
            job.run = partial(_run_diffusion, editor, session, diffusion, photos[0].crop.image,
                              photos[1].crop.image, crop)
            queue.submit(job)
            return jsonify(job=_job_json(job, queue)), 202

    @app.get("/api/session/<sid>/diffusion/<any(stitched,result):kind>.png")
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
    with session.lock:
        if session.closed or session.photos.get(slot) is not photo or photo.job is not job:
            raise JobCancelled()
        photo.code, photo.reconstruction = code, reconstruction
        photo.version += 1
        session.file(f"code-{slot}.npy").write_bytes(encode_npy(code))


def _run_refinement(editor: Editor, session: Session, slot: str, photo: Photo, code, face, job: Job) -> None:
    tuned, seconds = editor.refine(face, code, progress=job.report)
    with session.lock:
        if session.closed or session.photos.get(slot) is not photo or photo.refine_job is not job:
            raise JobCancelled()
        photo.tuned, photo.refine_seconds = tuned, seconds


def _run_diffusion(editor: Editor, session: Session, diffusion: Diffusion, target, context,
                   crop: tuple[int, int, int], job: Job) -> None:
    size, cx, cy = crop
    stitched, result = editor.diffuse(target, context, crop_size=size, center_x=cx, center_y=cy,
                                      progress=job.report)
    with session.lock:
        if session.closed or session.diffusion is not diffusion:
            raise JobCancelled()
        diffusion.stitched, diffusion.result = stitched, result


class _QuietHandler(WSGIRequestHandler):
    """No line per request (the page polls several times a second); errors are still logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def make_server(app: Flask, host: str = "127.0.0.1", port: int = 7860) -> BaseWSGIServer:
    """A threaded HTTP server for ``app``; port 0 picks a free one (``server.port`` tells which).

    The socket is bound here, so a port in use raises ``OSError`` (werkzeug would exit the process).
    """
    family = select_address_family(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as socketserver does; a listener still blocks
        sock.bind(get_sockaddr(host, port, family))
        sock.listen(128)
        return _make_server(host, port, app, threaded=True, request_handler=_QuietHandler, fd=sock.fileno())
    finally:
        sock.close()  # the server holds its own duplicate of the descriptor
