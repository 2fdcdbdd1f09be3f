"""The Flask app of ``idinvert serve``: a JSON and image API over ``Editor`` (``routes``) plus the static
page, with the rules every request passes (trusted ``Host``, same ``Origin``, security headers).

Every endpoint below ``/api/session/<id>/`` belongs to one browser tab (a session). Errors are
JSON ``{"error": "<one readable sentence>"}`` with a fitting status: 400 bad input (also a JSON
body nested too deeply or a foreign ``Host``), 404 unknown or ended session (also one closed to
make room for a new tab), 403 a state-changing request sent by another web site (its ``Origin``),
409 a step is missing (no photo or inversion yet), 413 upload or JSON body too large, 415 not an
image, 503 the server is busy decoding other large photos (try again).
"""

from __future__ import annotations

import re
import socket
import tempfile
from pathlib import Path

from flask import Flask, Request, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, get_sockaddr, select_address_family
from werkzeug.serving import make_server as _make_server

from ..errors import IdinvertError
from ..pack import ModelPack
from .editor import Editor
from .routes import STATIC, ApiError, routes
from .state import ServerOptions, ServerState, default_samples

HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>\d{1,5}))?")


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
    app.register_blueprint(routes)  # routes.py: one function per route, on app.extensions["idinvert"]
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
