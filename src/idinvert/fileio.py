"""Atomic file output: files appear only when complete, failed runs change nothing.

``atomic_path`` gives a temporary name beside the target and renames it into place on
success. ``StagedOutput`` collects a whole run's files in a hidden sibling folder and moves
them into the output folder only when the run succeeds, so a failed run leaves that folder
exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import OutputError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=False) + "\n")


def check_output_dir(path: str | os.PathLike) -> Path:
    """Refuse an output location that exists and is not a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output {path} exists and is not a folder; choose another --out")
    return path


class StagedOutput:
    """Collect output files in ``.<name>.staging-*`` beside ``out``; publish them on success.

    Use as a context manager: ``with StagedOutput(out) as stage: save(stage.path / "x.png")``.
    On a clean exit every staged file is moved into ``out`` (created if needed, existing
    files of the same name replaced); on an exception the staging folder is removed and
    ``out`` is untouched.
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = check_output_dir(out).resolve()
        self.path: Path | None = None

    def __enter__(self) -> "StagedOutput":
        parent = self.out.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.staging-", dir=parent))
        except OSError as exc:
            raise OutputError(f"cannot write beside {self.out}: {exc.strerror}; choose another --out") from None
        return self

    def file(self, name: str) -> Path:
        assert self.path is not None
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.path is not None
        try:
            if exc_type is None:
                self._publish()
        finally:
            shutil.rmtree(self.path, ignore_errors=True)

    def _publish(self) -> None:
        assert self.path is not None
        self.out.mkdir(parents=True, exist_ok=True)
        for src in sorted(self.path.rglob("*")):
            if src.is_file():
                dst = self.out / src.relative_to(self.path)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
