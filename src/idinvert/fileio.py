"""Atomic file output: files appear only when complete, failed runs change nothing.

``atomic_path`` gives a temporary name beside the target and renames it into place on
success. ``StagedOutput`` collects a whole run's files in a hidden sibling folder and moves
them into the output folder only when the run succeeds, so a failed run leaves that folder
exactly as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .errors import OutputError
from .safety import claim_output_dir, inside, mark_output_dir


# A full disk, a quota, a read-only or failing file system: the writer's fault is the location's, and
# the user gets one line (the half-written temporary file or staging folder is removed first).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
TEMP_STEM = 100  # characters of a target's name kept in its temporary sibling's (names stay under 255 bytes)


def write_failure(exc: OSError, target: Path) -> OutputError | None:
    """The one-line error for a write that failed because of where it writes (None for other errors)."""
    if exc.errno not in WRITE_ERRNOS:
        return None
    return OutputError(f"cannot write {target}: {exc.strerror or exc}; free some space or choose another location")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:TEMP_STEM]}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise write_failure(exc, target) or exc from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, target)
    except OSError as exc:
        failure = write_failure(exc, target)
        if failure is None:
            raise
        raise failure from None
    finally:
        if tmp.exists():
            tmp.unlink()


def usual_modes(folder: str | os.PathLike) -> None:
    """Give a folder made in private (``mkdtemp``: 0700; safetensors files: 0600) and everything in it the
    modes a plain ``mkdir`` and ``open`` would have given, before it is moved into place."""
    mask = _umask()
    for path in Path(folder).rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
    os.chmod(folder, 0o777 & ~mask)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_ready(value: Any) -> Any:
    """A copy that ``json.dumps`` writes as strict JSON: dict keys as strings, tuples as lists, tensors and
    numpy arrays or scalars as (lists of) numbers, bytes as Latin-1 text, NaN and ±inf as null."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return json_ready(value.tolist())
    if isinstance(value, bytes):
        return value.decode("latin1")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(target: str | os.PathLike, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=False) + "\n")


def check_output_dir(path: str | os.PathLike, *, inputs=(), what: str = "--out") -> Path:
    """The output-folder rules of ``safety.claim_output_dir`` (new, empty or idinvert's own; not an
    input; writable), checked before any work starts."""
    return claim_output_dir(path, inputs=inputs, what=what)


class StagedOutput:
    """Collect output files in ``.<name>.staging-*`` beside ``out``; publish them on success.

    Use as a context manager: ``with StagedOutput(out) as stage: save(stage.path / "x.png")``.
    On a clean exit every staged file is moved into ``out`` (created if needed, existing
    files of the same name replaced) with the marker that lets a later run replace them; on an
    exception (SIGTERM included, see ``cli.main``) the staging folder is removed and ``out`` is
    untouched. ``out`` must pass ``check_output_dir``, checked again here.
    """

    def __init__(self, out: str | os.PathLike, *, inputs=()) -> None:
        self.out = check_output_dir(out, inputs=inputs).resolve()
        self.path: Path | None = None

    def __enter__(self) -> "StagedOutput":
        parent = self.out.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name[:TEMP_STEM]}.staging-", dir=parent))
        except OSError as exc:
            raise OutputError(f"cannot write beside {self.out}: {exc.strerror}; choose another --out") from None
        return self

    def file(self, name: str) -> Path:
        """A path for ``name`` inside the staging folder (refused if it would leave it)."""
        assert self.path is not None
        target = inside(self.path, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.path is not None
        try:
            if exc_type is None:
                self._publish()
        finally:
            shutil.rmtree(self.path, ignore_errors=True)
        if isinstance(exc, OSError) and (failure := write_failure(exc, self.out)) is not None:
            raise failure from None  # the disk filled while the results were written

    def _publish(self) -> None:
        assert self.path is not None
        files = [src for src in sorted(self.path.rglob("*")) if src.is_file() and not src.is_symlink()]
        for src in files:  # everything that could stop the move half-way, before moving anything
            dst = self.out / src.relative_to(self.path)
            if dst.is_symlink() or (dst.exists() and not dst.is_file()):
                raise OutputError(f"{dst} exists and is not a plain file, so the results cannot be written "
                                  f"there; remove it or choose another --out")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            mark_output_dir(self.out)
            for src in files:
                dst = self.out / src.relative_to(self.path)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
        except OSError as exc:
            raise OutputError(f"cannot write the results into {self.out} ({exc.strerror}); choose another "
                              f"--out") from None
