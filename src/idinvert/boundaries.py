"""Boundary files: semantic directions in W+ and the layers they move.

A boundary (an InterFaceGAN-style direction, or one found without labels by ``engine.directions``)
comes in the official format — ``np.save`` of a dict ``{'boundary': [1, L, C], 'meta_data':
{'manipulate_layers': [...]}}`` — or as a plain ``[1, C]`` or ``[1, L, C]`` array. The dict format
needs a pickle, so it is read with ``safety.read_numpy_pickle``: scanned first (objects, depth and shared
references bounded), then unpickled building only numpy arrays, dicts, lists, numbers and strings; a file
that pickles anything else is refused, never executed.

``Boundary`` is what the engine's ``manipulate`` moves codes along; ``parse_layers`` reads a layer
choice such as ``"0-5"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import safety
from .errors import BoundaryError, ConfigError
from .fileio import atomic_path


@dataclass(frozen=True)
class Boundary:
    """A semantic direction in W+ and, when its file says so, the layers it should move."""

    direction: torch.Tensor  # [1, C] (one direction for every layer) or [L, C] (one per layer)
    layers: tuple[int, ...] | None = None  # meta_data['manipulate_layers']; None = not specified
    meta: dict[str, Any] = field(default_factory=dict)  # the file's other meta_data entries


def parse_layers(spec: str | Sequence[int] | None, num_layers: int) -> list[int]:
    """Layer indices from ``"0-5"``, ``"2,3,4"``, ``"0-2,7"`` or a sequence; empty/None = all layers."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return list(range(num_layers))
    if isinstance(spec, str):
        layers: list[int] = []
        for part in spec.split(","):
            try:
                lo, sep, hi = part.strip().partition("-")
                layers.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
            except ValueError:
                raise ConfigError(f"layers {spec!r}: use indices and ranges like '0-5' or '2,3,4'") from None
    else:
        layers = [int(v) for v in spec]
    bad = [v for v in layers if not 0 <= v < num_layers]
    if bad or not layers:
        raise ConfigError(f"layers {spec!r}: this model has layers 0-{num_layers - 1}; pick some, like '0-5'")
    return sorted(set(layers))


def fit_boundary(array: np.ndarray | torch.Tensor, code_shape: tuple[int, int], what: str = "boundary") -> torch.Tensor:
    """A ``[1, C]`` or ``[1, L, C]`` boundary as a float tensor ``[1, C]`` or ``[L, C]``, checked
    against the model's codes ``[L, C]`` (BoundaryError otherwise)."""
    num_layers, w_dim = code_shape
    shape = list(array.shape)
    if shape not in ([1, w_dim], [1, num_layers, w_dim]):
        raise BoundaryError(f"{what} has shape {shape}, but this model takes [1, {w_dim}] (one direction for "
                            f"all layers) or [1, {num_layers}, {w_dim}] (one per layer); use a boundary made "
                            f"for this model's W+ space")
    if isinstance(array, np.ndarray):
        direction = torch.from_numpy(np.array(array, dtype=np.float32))
    else:
        direction = array.detach().float()
    direction = direction.reshape(-1, w_dim)  # [1, C] or [L, C]
    if not torch.isfinite(direction).all():
        raise BoundaryError(f"{what} contains NaN or infinite values; use a valid boundary file")
    return direction



MAX_BOUNDARY_BYTES = 64 * 1024 * 1024  # a boundary file is [1, L, C] floats plus a small meta_data
PICKLE_WRAPPING = 8  # pickle levels around the dict: the object array, its state tuple and list, the dict
MAX_META_VALUES = 10_000  # numbers and characters in meta_data (it is copied into manifests)


def _check_plain_data(value: Any, path: Path, *, max_elements: int = safety.MAX_ELEMENTS) -> None:
    """Refuse anything but dicts (string keys), lists, numeric arrays, numbers and strings, nested at
    most ``safety.MAX_DEPTH`` deep and of bounded size (``safety.check_plain_data``)."""
    safety.check_plain_data(value, str(path), error=BoundaryError, max_elements=max_elements)


def _read_npy(path: Path) -> Any:
    """A plain array, or the object a 0-d object array wraps (the official dict), read safely: the
    header and the file size are checked first, and only numpy arrays and containers are unpickled."""
    _, dtype, _ = safety.npy_header(path, error=BoundaryError)
    if not dtype.hasobject:
        return safety.load_npy(path, error=BoundaryError, max_bytes=MAX_BOUNDARY_BYTES)
    if path.stat().st_size > MAX_BOUNDARY_BYTES:
        raise BoundaryError(f"{path}: {path.stat().st_size:,} bytes is too large for a boundary file "
                            f"(limit {MAX_BOUNDARY_BYTES:,})")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            reader = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if reader is None:
                raise BoundaryError(f"{path}: unsupported .npy version {version}; save it with np.save")
            shape, _, dtype = reader(f)
            data = f.read()
    except (ValueError, EOFError, OSError) as exc:
        raise BoundaryError(f"{path}: corrupt .npy file ({type(exc).__name__}: {str(exc)[:100]}); use a boundary "
                            f"file") from None
    # the one bounded pickle reader: objects, depth and shared references counted before anything is built
    wrapper = safety.read_numpy_pickle(data, str(path), error=BoundaryError, max_depth=safety.MAX_DEPTH + PICKLE_WRAPPING,
                                       refusal="refusing {what}: it pickles {detail}, which a boundary file never "
                                               "needs; only dicts of arrays, lists, numbers and strings are loaded")
    if not isinstance(wrapper, np.ndarray) or wrapper.dtype != object or wrapper.shape != () or shape != ():
        raise BoundaryError(f"{path}: an object array of shape {list(shape)}; expected a plain array or the "
                            f"official dict format")
    content = wrapper[()]
    _check_plain_data(content, path)
    return content


def is_boundary_file(path: Path) -> bool:
    """Whether ``path`` holds a boundary in the official dict format (what ``save_boundary`` writes), so
    that an output may replace it."""
    try:
        content = _read_npy(path)
    except BoundaryError:
        return False
    return isinstance(content, dict) and isinstance(content.get("boundary"), np.ndarray) \
        and isinstance(content.get("meta_data"), dict)


def load_boundary(path: str | os.PathLike, code_shape: tuple[int, int]) -> Boundary:
    """Read a boundary ``.npy`` (official dict, ``[1, C]`` or ``[1, L, C]``) for codes ``[L, C]``.

    Raises ``BoundaryError`` when the file is unreadable, unsafe, or does not fit ``code_shape``.
    """
    path = Path(path)
    if not path.is_file():
        raise BoundaryError(f"{path}: no such boundary file")
    content = _read_npy(path)
    layers, meta = None, {}
    if isinstance(content, dict):
        if "boundary" not in content:
            raise BoundaryError(f"{path}: the dict has no 'boundary' entry (keys: {', '.join(content)})")
        array, meta = content["boundary"], content.get("meta_data") or {}
        if not isinstance(meta, dict):
            raise BoundaryError(f"{path}: 'meta_data' is a {type(meta).__name__}, not a dict")
        _check_plain_data(meta, path, max_elements=MAX_META_VALUES)
        meta = dict(meta)
        if not isinstance(array, np.ndarray):
            raise BoundaryError(f"{path}: 'boundary' is a {type(array).__name__}, not an array")
        if meta.get("manipulate_layers") is not None:
            raw = meta.pop("manipulate_layers")
            try:
                layers = tuple(parse_layers([int(v) for v in np.asarray(raw).ravel()], code_shape[0]))
            except (ValueError, TypeError, ConfigError):
                raise BoundaryError(f"{path}: meta_data manipulate_layers {raw!r} does not fit a "
                                    f"{code_shape[0]}-layer model; pass --layers or fix the file") from None
    elif isinstance(content, np.ndarray):
        array = content
    else:
        raise BoundaryError(f"{path}: holds a {type(content).__name__}; expected an array or the official dict")
    if array.dtype.kind not in "iuf":
        raise BoundaryError(f"{path}: boundary of dtype {array.dtype}; expected floating-point values")
    return Boundary(fit_boundary(array, code_shape, what=str(path)), layers, meta)


def save_boundary(path: str | os.PathLike, boundary: torch.Tensor | np.ndarray, *,
                  layers: Sequence[int] | None = None, meta: dict[str, Any] | None = None) -> Path:
    """Write the official dict format: ``{'boundary': float32 [1, L, C] or [1, C],
    'meta_data': {'manipulate_layers': [...], **meta}}`` (``layers`` None = all layers)."""
    array = boundary.detach().cpu().numpy() if isinstance(boundary, torch.Tensor) else np.asarray(boundary)
    array = array.astype(np.float32)
    if array.ndim == 1 or (array.ndim == 2 and array.shape[0] > 1):  # [C] or [L, C]: add the batch axis
        array = array[None]
    if array.ndim not in (2, 3) or array.shape[0] != 1:
        raise BoundaryError(f"a boundary is [C], [L, C], [1, C] or [1, L, C]; got {list(array.shape)}")
    meta_data: dict[str, Any] = dict(meta or {})
    num_layers = array.shape[1] if array.ndim == 3 else None
    if layers is not None:
        meta_data["manipulate_layers"] = [int(v) for v in layers]
    elif num_layers is not None:
        meta_data["manipulate_layers"] = list(range(num_layers))
    _check_plain_data({"boundary": array, "meta_data": meta_data}, Path(path))  # as load_boundary reads it
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, {"boundary": array, "meta_data": meta_data}, allow_pickle=True)
    return path
