"""Per-tab state of the web editor and the one temporary folder it may write into.

Each server makes one folder with ``tempfile.mkdtemp``; each session (a browser tab) gets a
sub-folder named by the server. Session ids and file names are generated here, never taken from
a request, and every path is checked to lie inside the session's folder. A session ends when its
tab says so (``navigator.sendBeacon`` on ``pagehide``) or when the reaper finds it idle; either
way its jobs are cancelled and its folder deleted.
"""

from __future__ import annotations

import ctypes
import gc
import re
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from .editor import FaceCrop
from .jobs import Job

SLOTS = ("a", "b")  # photo 1 (edited) and photo 2 (interpolation, style mixing, diffusion)
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{20,64}")
FILE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,40}\.[a-z0-9]{1,8}")


@dataclass(eq=False)
class Photo:
    """An uploaded photo, its candidate faces and, once inverted, the chosen face's code."""

    image: Image.Image  # the full photo, RGB
    faces: list[FaceCrop]  # candidates, left to right
    notice: str | None  # set when the centre square stands in for a face
    preview: bytes  # JPEG of the photo with the faces framed
    face: int | None = None  # the chosen candidate
    job: Job | None = None  # its inversion
    code: torch.Tensor | None = None  # [1, L, C] on the pack's device
    reconstruction: torch.Tensor | None = None  # [3, R, R]
    version: int = 0  # bumped whenever the photo or its code changes (cache-busting in the page)
    refine_job: Job | None = None  # its pivotal tuning ("faithful (slower)")
    tuned: object | None = None  # tuned.TunedWeights of the chosen face's generator, once tuned
    refine_seconds: float | None = None  # how long the tuning took
    readings: dict[str, float] | None = None  # the predictor on the reconstruction: years, per cent
    tuned_readings: dict[str, float] | None = None  # the same on the tuned generator's reconstruction
    amount_cache: dict = field(default_factory=dict)  # slider value → distance searches of this code

    @property
    def crop(self) -> FaceCrop | None:
        return None if self.face is None else self.faces[self.face]


@dataclass(eq=False)
class Diffusion:
    job: Job
    target: str  # the slot whose square is pasted
    stitched: torch.Tensor | None = None  # [3, R, R]
    result: torch.Tensor | None = None  # [3, R, R]


@dataclass(eq=False)
class Session:
    id: str
    folder: Path
    last_seen: float
    photos: dict[str, Photo] = field(default_factory=dict)
    diffusion: Diffusion | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    closed: bool = False

    def file(self, name: str) -> Path:
        """A path for a server-chosen file name inside this session's folder."""
        if not FILE_NAME.fullmatch(name):
            raise ValueError(f"not a server file name: {name!r}")
        path = (self.folder / name).resolve()
        if path.parent != self.folder.resolve():
            raise ValueError(f"{name!r} is outside the session folder")
        return path


def release_memory() -> None:
    """Give the memory of closed sessions' photos back to the system (glibc keeps freed heap otherwise)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused by the process instead
        pass


class SessionStore:
    """Sessions by id, their folders under one ``mkdtemp`` folder, and the idle reaper."""

    def __init__(self, *, idle_timeout: float, max_sessions: int, parent: str | Path | None = None,
                 on_close: Callable[[Session], None] | None = None) -> None:
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="idinvert-serve-", dir=parent)).resolve()
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self._on_close = on_close
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def create(self) -> Session:
        """A new session. When ``max_sessions`` are open the least recently used one is closed to make
        room, sessions without a photo first, so that opened-and-forgotten (or scripted) sessions can
        never lock out a new tab; the evicted tab is told to reload when it next asks."""
        evicted = None
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                evicted = min(self._sessions.values(), key=lambda s: (bool(s.photos), s.last_seen))
                del self._sessions[evicted.id]
            sid = secrets.token_urlsafe(24)
            folder = self.root / f"s-{secrets.token_hex(8)}"
            folder.mkdir(mode=0o700)
            session = Session(sid, folder, time.monotonic())
            self._sessions[sid] = session
        if evicted is not None:
            self._dispose(evicted)
        return session

    def get(self, sid: str) -> Session | None:
        """The session, its idle clock reset; None for an unknown or malformed id."""
        if not SESSION_ID.fullmatch(sid):
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None:
                session.last_seen = time.monotonic()
            return session

    def close(self, sid: str) -> bool:
        with self._lock:
            session = self._sessions.pop(sid, None) if SESSION_ID.fullmatch(sid) else None
        if session is None:
            return False
        self._dispose(session)
        return True

    def _dispose(self, session: Session) -> None:
        with session.lock:
            session.closed = True
            session.photos.clear()
            session.diffusion = None
        if self._on_close is not None:
            self._on_close(session)
        shutil.rmtree(session.folder, ignore_errors=True)
        release_memory()

    def reap(self, now: float | None = None) -> list[str]:
        """Close the sessions idle for longer than ``idle_timeout``; their ids."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [s for s in self._sessions.values() if now - s.last_seen > self.idle_timeout]
            for s in idle:
                del self._sessions[s.id]
        for s in idle:
            self._dispose(s)
        return [s.id for s in idle]

    def start_reaper(self, interval: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                self.reap()

        self._reaper = threading.Thread(target=loop, name="idinvert-reaper", daemon=True)
        self._reaper.start()

    def shutdown(self) -> None:
        """Stop the reaper, close every session and remove the server's folder."""
        self._stop.set()
        if self._reaper is not None and self._reaper is not threading.current_thread():
            self._reaper.join(5.0)
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            self._dispose(s)
        shutil.rmtree(self.root, ignore_errors=True)
