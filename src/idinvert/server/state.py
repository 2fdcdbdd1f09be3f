"""What one editor server holds: its settings (``ServerOptions``), and the editor, the job queue and
the sessions behind one app (``ServerState``, ``app.extensions["idinvert"]``)."""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

from PIL import Image

from ..assets import bundled_portrait, bundled_portrait_available
from ..engine.inversion import MAX_STEPS
from ..images import MAX_PIXELS
from ..safety import check_float, check_int
from .editor import MAX_PHOTO_SIDE, Editor
from .jobs import JobQueue
from .sessions import SessionStore

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MAX_UPLOAD_MB = 1024.0
MAX_IDLE_SECONDS = 7 * 24 * 3600.0  # a week

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
    """Photos offered without an upload: the bundled portrait (``assets.bundled_portrait``), where it loads."""
    return {"astronaut": bundled_portrait} if bundled_portrait_available() else {}


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
