"""One worker thread that runs the slow work (inversion, diffusion) one job at a time, first come
first served, so several browser tabs share the CPU or GPU without slowing each other down twice.

A job reports its step through ``Job.report``, which is also where a cancelled job stops: the
inversion engine calls it after every optimisation step and the exception it raises ends the loop.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from ..errors import IdinvertError

log = logging.getLogger("idinvert.server")

STATES = ("queued", "running", "done", "error", "cancelled")


class JobCancelled(Exception):
    """Raised inside a job whose session closed or which a newer job replaced."""


@dataclass(eq=False)
class Job:
    """A unit of work for the worker; ``run(job)`` does it and stores its results itself."""

    kind: str  # "invert" or "diffuse" (shown in the page)
    owner: str  # the session id: cancel_owner ends all of a session's jobs
    steps: int  # optimisation steps, for the progress bar
    run: Callable[["Job"], None]
    id: str = field(default_factory=lambda: secrets.token_hex(6))
    state: str = "queued"
    step: int = 0
    message: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    def report(self, step: int) -> None:
        """Progress from inside ``run``; raises JobCancelled once the job was cancelled."""
        self.step = step
        if self.cancelled.is_set():
            raise JobCancelled()

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


class JobQueue:
    """A FIFO of jobs and the worker thread that runs them."""

    def __init__(self, name: str = "idinvert-worker") -> None:
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()
        self._running: Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._closed:
                raise RuntimeError("the job queue is closed")
            job.state = "queued"
            self._pending.append(job)
            self._cond.notify_all()
        return job

    def ahead(self, job: Job) -> int:
        """How many jobs run before this one (the running job included); 0 when it runs or ran."""
        with self._cond:
            try:
                index = self._pending.index(job)
            except ValueError:
                return 0
            return index + (self._running is not None)

    def cancel(self, job: Job) -> None:
        self._cancel(lambda j: j is job)

    def cancel_owner(self, owner: str) -> None:
        self._cancel(lambda j: j.owner == owner)

    def _cancel(self, match: Callable[[Job], bool]) -> None:
        with self._cond:
            for job in [j for j in self._pending if match(j)]:
                self._pending.remove(job)
                job.state = "cancelled"
                job.cancelled.set()
                job.finished.set()
            if self._running is not None and match(self._running):
                self._running.cancelled.set()

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything and stop the worker (waits for a running job to reach its next step)."""
        self._cancel(lambda j: True)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._running = self._pending.popleft()
                job.state = "running"
            try:
                if job.cancelled.is_set():
                    raise JobCancelled()
                job.run(job)
                job.state = "done"
            except JobCancelled:
                job.state = "cancelled"
            except IdinvertError as exc:
                job.state, job.message = "error", str(exc)
            except Exception as exc:  # a bug or an exhausted device: report it, keep serving
                log.exception("%s job failed", job.kind)
                job.state, job.message = "error", f"{job.kind} failed ({type(exc).__name__}: {exc})"
            finally:
                with self._cond:
                    self._running = None
                job.finished.set()
