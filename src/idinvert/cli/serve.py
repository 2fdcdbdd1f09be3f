"""``idinvert serve``: the local web editor (``idinvert.server``)."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import re
import signal
import threading

from ..engine.inversion import MAX_STEPS
from ..errors import ConfigError
from ..safety import check_float, check_int
from .common import add_device, add_model, info, open_pack

FLASK_HINT = 'the web editor needs Flask: pip install "flask>=3.0,<4" (or pip install "idinvert[serve]")'


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a local web editor: upload a photo, invert it, edit it with sliders",
                       description="Start the web editor and print its address. Photos are uploaded into one "
                                   "temporary folder per server, deleted when their tab closes or after "
                                   "--idle-timeout minutes without a request. Listens on 127.0.0.1 only unless "
                                   "--host says otherwise. Ctrl-C (or SIGTERM) stops it, deletes that folder and "
                                   "exits with status 0.")
    add_model(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this computer only; 0.0.0.0 opens it to the "
                        "network, without any login)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    add_device(p)
    p.add_argument("--steps", type=int, default=100, help="inversion steps per photo (default 100, the paper's)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload (default 20 MB)")
    p.add_argument("--idle-timeout", type=float, default=30.0, metavar="MINUTES",
                   help="delete a tab's photos after this long without a request (default 30 minutes)")
    p.add_argument("--alignment", choices=("auto", "dlib", "center"), default="auto",
                   help="auto: dlib face alignment when installed, else the centre square of the photo")
    p.set_defaults(run=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def trusted_hosts(host: str) -> tuple[str, ...] | None:
    """The Host headers served: for a loopback address, only loopback names (a page on another site
    cannot reach the editor through DNS rebinding); for an address on the network, any."""
    if not _is_loopback(host):
        return None
    return tuple(dict.fromkeys(("127.0.0.1", "localhost", "::1", host.strip("[]").lower())))


def _check_host(host: str) -> None:
    """Refuse, before anything starts, a host that looks like an IP address but is none (256.1.1.1);
    a host name that cannot be resolved is reported when binding."""
    if re.fullmatch(r"[\d.]+", host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"--host {host[:60]}: not an IP address; use 127.0.0.1 (this computer only) or an "
                              f"address of this computer") from None


def _stop_on_signals() -> dict | None:
    """``kill`` and service managers send SIGTERM: stop as on Ctrl-C (werkzeug ends serve_forever). Ctrl-C
    stops the server even when it was started with SIGINT ignored (a background job of a script inherits
    that, and Python then never raises KeyboardInterrupt). Returns the previous handlers (None outside
    the main thread, where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise KeyboardInterrupt

    return {signal.SIGTERM: signal.signal(signal.SIGTERM, stop),
            signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: use 1 to 65535, or 0 for a free port")
    check_int(args.steps, "--steps", 0, MAX_STEPS)
    check_float(args.max_upload_mb, "--max-upload-mb", 0.0, 1024.0, low_open=True, hint="megabytes")
    check_float(args.idle_timeout, "--idle-timeout", 0.0, 7 * 24 * 60.0, low_open=True, hint="minutes, up to a week")
    _check_host(args.host)
    try:
        from ..server import ServerOptions, create_app, make_server
    except ModuleNotFoundError as exc:
        if exc.name in ("flask", "werkzeug"):
            raise ConfigError(FLASK_HINT) from None
        raise
    options = ServerOptions(steps=args.steps, max_upload_mb=args.max_upload_mb, idle_timeout=args.idle_timeout * 60,
                            alignment=args.alignment, trusted_hosts=trusted_hosts(args.host))
    pack = open_pack(args)
    app = create_app(pack, options)
    state, server = app.extensions["idinvert"], None
    previous_handlers = _stop_on_signals()
    try:
        try:
            server = make_server(app, args.host, args.port)
        except OSError as exc:
            advice = "choose another --port" if exc.errno == errno.EADDRINUSE else \
                "check --host (an address of this computer, e.g. 127.0.0.1)"
            raise ConfigError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); {advice}") from None
        host = f"[{args.host}]" if ":" in args.host else args.host
        if state.editor.alignment_notice and args.alignment == "auto":
            info(args, f"note: {state.editor.alignment_notice}")
        if not _is_loopback(args.host):
            info(args, f"warning: --host {args.host} makes the editor reachable from other computers, "
                       f"with no login")
        print(f"idinvert editor for pack {pack.name!r} ({pack.resolution} px, {pack.device}): "
              f"http://{host}:{server.port}/  (Ctrl-C to stop)", flush=True)
        server.serve_forever()  # returns on Ctrl-C
    finally:  # every uploaded photo is deleted with the server's folder
        if server is not None:
            server.server_close()
        state.close()
        for signum, handler in (previous_handlers or {}).items():
            signal.signal(signum, handler)
    info(args, "idinvert serve: stopped; the uploaded photos are deleted")
    return 0
