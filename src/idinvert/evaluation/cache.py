"""Resuming and progress for the evaluation: the ``Cache`` protocol, fingerprints, progress bars.

A part of the evaluation is stored under a key with the fingerprint of everything it depends on
(``digest`` of settings, ``tensor_digest`` of images and codes, ``module_digest`` of weights); it is
reused only when the fingerprint matches. ``MemoryCache`` keeps parts for one process; the command
line supplies a cache backed by the output folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any, Callable, ContextManager, Iterator, Protocol

import torch


class Cache(Protocol):
    """Results of finished parts: ``load`` returns what ``store`` kept under the same fingerprint."""

    def load(self, key: str, fingerprint: str) -> dict[str, Any] | None: ...

    def store(self, key: str, fingerprint: str, value: dict[str, Any]) -> None: ...


class MemoryCache:
    """A ``Cache`` in memory (tests, and runs that need no resuming)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, dict[str, Any]]] = {}

    def load(self, key: str, fingerprint: str) -> dict[str, Any] | None:
        entry = self.entries.get(key)
        return dict(entry[1]) if entry is not None and entry[0] == fingerprint else None

    def store(self, key: str, fingerprint: str, value: dict[str, Any]) -> None:
        self.entries[key] = (fingerprint, dict(value))


ProgressFactory = Callable[[str, int], ContextManager[Any]]  # (description, total) → bar with update(n)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def no_progress(desc: str, total: int) -> Iterator[_NoBar]:
    yield _NoBar()


def digest(*parts: Any) -> str:
    """A short hash of JSON-able parts (settings, other digests)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def tensor_digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha1()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{list(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:20]


def module_digest(*modules: torch.nn.Module | None) -> str:
    tensors = []
    for m in modules:
        if m is not None:
            tensors.extend(v for _, v in sorted(m.state_dict().items()))
    return tensor_digest(*tensors)
