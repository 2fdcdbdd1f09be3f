"""Resuming and progress for the evaluation: the ``Cache`` protocol, fingerprints, progress bars.

A part of the evaluation is stored under a key with the fingerprint of everything it depends on
(``digest`` of settings, ``tensor_digest`` of images and codes, ``module_digest`` of weights); it is
reused only when the fingerprint matches. ``MemoryCache`` keeps parts for one process; ``FolderCache``
keeps them in a folder (``idinvert evaluate``'s ``OUT/cache``), so that a later run resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import OutputError
from ..fileio import atomic_path, write_json

MAX_ENTRY_BYTES = 64 * 1024 * 1024  # a cache entry's JSON (numbers per image, never images)


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


class FolderCache:
    """A ``Cache`` in a folder: ``KEY.json`` (numbers, fingerprint) and ``KEY.safetensors`` (tensors).

    The tensors are written first, the JSON last, both atomically: an entry exists only whole.
    With ``reuse=False`` nothing is read back (entries are still written for a later --resume).
    """

    def __init__(self, folder: Path, *, reuse: bool) -> None:
        if folder.is_symlink():  # writes would land wherever it points
            raise OutputError(f"{folder} is a symbolic link; remove it, idinvert keeps its cache in a real folder")
        self.folder, self.reuse = folder, reuse

    def _path(self, key: str, suffix: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9._-]", "_", key) + suffix)

    def load(self, key: str, fingerprint: str) -> dict[str, Any] | None:
        meta_path = self._path(key, ".json")
        if not self.reuse or not meta_path.is_file():
            return None
        try:  # bounded JSON (size; depth through RecursionError), a dict of plain values, tensors of numbers
            if meta_path.stat().st_size > MAX_ENTRY_BYTES:
                return None
            meta = json.loads(meta_path.read_text(encoding="utf-8"))  # NaN: a measure that had no value
            if not isinstance(meta, dict) or meta.get("fingerprint") != fingerprint or not isinstance(meta.get("value"), dict):
                return None
            value = dict(meta["value"])
            if meta.get("tensors"):
                tensors = load_file(str(self._path(key, ".safetensors")))
                if sorted(tensors) != meta["tensors"] or any(t.dtype.is_complex for t in tensors.values()):
                    return None
                value.update(tensors)
        except (OSError, ValueError, KeyError, TypeError, RecursionError, SafetensorError):
            return None  # a damaged entry is recomputed
        return value

    def store(self, key: str, fingerprint: str, value: dict[str, Any]) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in value.items() if isinstance(v, torch.Tensor)}
        plain = {k: v for k, v in value.items() if not isinstance(v, torch.Tensor)}
        if tensors:
            with atomic_path(self._path(key, ".safetensors")) as tmp:
                save_file(tensors, str(tmp))
        write_json(self._path(key, ".json"), {"key": key, "fingerprint": fingerprint, "tensors": sorted(tensors),
                                              "value": plain})


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
