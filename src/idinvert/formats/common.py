"""What every reader of foreign weight files shares: one bounded reader of torch files, strict copying.

``read_torch_file`` is the one way idinvert opens a ``torch.save`` file (a weight file, a rosinality
checkpoint, a training run's ``checkpoint.pt``, a storage inside an NVIDIA snapshot): its pickles are
first scanned by ``safety.scan_pickle`` (count, depth and shared references bounded before anything is
built, hashed or printed), then ``torch.load(weights_only=True)`` rebuilds tensors and plain containers
only, never running code from the file; tensors that are sparse, on the meta device, quantized or of an
unusual dtype (float8, complex …) are refused. ``load_strict`` copies a state_dict into a module only
when every key and shape matches, and names what does not.
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ..errors import CheckpointError, IdinvertError
from ..safety import PICKLE_SLACK_BYTES, scan_pickle


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first line (its type's name when it has no message), for one-line errors."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


ZIP_MAGIC = b"PK\x03\x04"  # torch.save since torch 1.6
MAX_DATA_PKL = 1024**3  # the pickle of a torch zip file (tensor data lies beside it)
LEGACY_PICKLES = 5  # a legacy torch.save: magic number, protocol, sys_info, the object, storage keys
TENSOR_DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int8,
                 torch.int16, torch.int32, torch.int64, torch.bool}


def _scan_torch_pickles(source: Path | bytes, what: str, error: type[IdinvertError], kind: str) -> None:
    """``safety.scan_pickle`` over every pickle of a torch file before ``torch.load`` builds anything."""
    with (open(source, "rb") if isinstance(source, Path) else io.BytesIO(source)) as stream:
        if stream.read(4) == ZIP_MAGIC:
            stream.seek(0)
            try:
                with zipfile.ZipFile(stream) as archive:
                    members = [m for m in archive.infolist() if m.filename.rsplit("/", 1)[-1] == "data.pkl"]
                    if len(members) != 1 or members[0].file_size > MAX_DATA_PKL:
                        raise error(f"{what}: not a readable {kind} (a zip file without one data.pkl of at most "
                                    f"{MAX_DATA_PKL >> 20} MB)")
                    data = archive.read(members[0])
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
                raise error(f"{what}: not a readable {kind} (a damaged zip file: {first_line(exc)})") from None
            scan_pickle(io.BytesIO(data), what, error=error, max_bytes=len(data) + PICKLE_SLACK_BYTES, kind=kind)
            return
        stream.seek(0)
        for _ in range(LEGACY_PICKLES):
            scan_pickle(stream, what, error=error, kind=kind)


def _check_tensors(value: Any, what: str, error: type[IdinvertError]) -> None:
    """Refuse tensors a weight file never holds: sparse, meta, quantized, float8, complex …"""
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            if item.layout != torch.strided or item.is_meta or item.is_quantized or item.dtype not in TENSOR_DTYPES:
                if item.is_meta or item.is_quantized:
                    kind = "meta" if item.is_meta else "quantized"
                else:
                    kind = str(item.layout if item.layout != torch.strided else item.dtype).replace("torch.", "")
                raise error(f"{what}: holds a {kind} tensor {list(item.shape)[:6]}; weight files hold dense "
                            f"float, integer or bool tensors")
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, argparse.Namespace):
            stack.extend(vars(item).values())


def read_torch_file(source: str | Path | bytes, what: str | None = None, *, extra_globals: Iterable[type] = (),
                    error: type[IdinvertError] = CheckpointError, kind: str = "PyTorch file") -> Any:
    """The object in a ``torch.save`` file (a path, or the bytes of one), read safely and boundedly."""
    if not isinstance(source, bytes):
        source = Path(source)
        if not source.is_file():
            raise error(f"{source}: no such file")
    what = what or str(source)
    _scan_torch_pickles(source, what, error, kind)
    try:
        with torch.serialization.safe_globals(list(extra_globals)):
            data = torch.load(io.BytesIO(source) if isinstance(source, bytes) else source, map_location="cpu",
                              weights_only=True)
    except Exception as exc:  # torch raises many types for foreign, unsafe or corrupt files
        raise error(f"{what}: not a readable {kind} ({first_line(exc)})") from None
    _check_tensors(data, what, error)
    return data


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a ``.pth`` state_dict safely; a clear error for missing or foreign files."""
    path = Path(path)
    state = read_torch_file(path, kind="PyTorch weight file")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a state_dict of tensors")
    return state


def _summarise(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" … (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Copy ``state`` into ``module``; every key and shape must match."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)}≠{list(expected[k].shape)}"
             for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summarise(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_summarise(wrong)}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: " + "; ".join(problems))
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise CheckpointError(f"{source} holds NaN/inf values ({_summarise(broken)}); it comes from a diverged "
                              f"or damaged run — use an earlier checkpoint")
    with torch.no_grad():
        for k, v in module.state_dict().items():
            v.copy_(state[k].to(v.dtype))
    return module
