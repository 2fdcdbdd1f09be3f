"""Editing in W+: interpolation, manipulation along a boundary, style mixing, and boundary files.

All functions take W+ codes ``[N, L, C]`` (``L`` synthesis layers of ``C`` channels, as produced by
``idinvert.invert``) and return codes; ``synthesize`` turns any batch of codes into images. They
follow the official applications (``interpolate.py``, ``manipulate.py``, ``mix_style.py``):

- interpolation: ``src + l·(dst − src)`` for ``l = linspace(0, 1, steps + 2)``, in every layer;
- manipulation: ``wp'[l] = wp[l] + d·b[l]`` on the chosen layers only, for each distance d;
- style mixing: the content code with its layers ≥ k replaced by the style code's.

Boundary files (InterFaceGAN-style directions in W+) come in the official format — ``np.save`` of a
dict ``{'boundary': [1, L, C], 'meta_data': {'manipulate_layers': [...]}}`` — or as plain ``[1, C]``
or ``[1, L, C]`` arrays. The dict format needs a pickle, so it is read with an unpickler that builds
only numpy arrays, dicts, lists, numbers and strings: a file that pickles anything else is refused,
never executed.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import safety
from .errors import BoundaryError, ConfigError
from .fileio import atomic_path
from .inversion import frozen

OFFICIAL_LAYERS = 14  # synthesis layers of the official 256 px models
OFFICIAL_MIX_START = 10  # --mix_layer_start_idx of mix_style.py: layers 10–13 (128², 256²) from the style
DEFAULT_DISTANCES = (-3.0, 3.0, 7)  # --start_distance, --end_distance, --step of manipulate.py


# --- interpolation --------------------------------------------------------------------------------

def interpolate(src_codes: torch.Tensor, dst_codes: torch.Tensor, *, steps: int = 5,
                pairwise: bool = False) -> torch.Tensor:
    """Codes on the straight line from each source to each target, endpoints included.

    src_codes ``[N, L, C]``, dst_codes ``[M, L, C]``; ``steps`` intermediate codes (``--step``).
    Returns ``[N, M, steps + 2, L, C]`` for every (source, target) pair, or ``[N, steps + 2, L, C]``
    with ``pairwise=True`` (source i with target i, N = M). The first code of each row equals the
    source and the last the target exactly.
    """
    _check_codes(src_codes, "src_codes")
    _check_codes(dst_codes, "dst_codes")
    if src_codes.shape[1:] != dst_codes.shape[1:]:
        raise ValueError(f"source codes {list(src_codes.shape)} and target codes {list(dst_codes.shape)} "
                         f"come from different models")
    if steps < 0:
        raise ConfigError(f"steps must be ≥ 0; got {steps}")
    weights = torch.linspace(0, 1, steps + 2, device=src_codes.device, dtype=src_codes.dtype)
    if pairwise:
        if src_codes.shape[0] != dst_codes.shape[0]:
            raise ValueError(f"pairwise interpolation needs as many sources as targets "
                             f"({src_codes.shape[0]} ≠ {dst_codes.shape[0]})")
        src, dst, w = src_codes[:, None], dst_codes[:, None], weights.view(1, -1, 1, 1)
    else:
        src, dst, w = src_codes[:, None, None], dst_codes[None, :, None], weights.view(1, 1, -1, 1, 1)
    # torch.lerp computes src + w·(dst − src) and returns dst exactly at w = 1.
    shape = torch.broadcast_shapes(src.shape, dst.shape, w.shape)
    return torch.lerp(src.expand(shape), dst.expand(shape), w.expand(shape))


# --- manipulation ---------------------------------------------------------------------------------

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


def manipulate(codes: torch.Tensor, boundary: Boundary | torch.Tensor, *,
               distances: Sequence[float] | torch.Tensor | None = None,
               layers: str | Sequence[int] | None = None) -> torch.Tensor:
    """Move codes along a boundary: ``wp'[l] = wp[l] + d·b[l]`` for l in ``layers``, others unchanged.

    codes ``[N, L, C]``; boundary a ``Boundary`` or a tensor ``[1, C]`` / ``[1, L, C]``; distances
    default to ``linspace(-3, 3, 7)``; layers as for ``parse_layers`` (None: the boundary's own
    layers, else all). Returns ``[N, K, L, C]`` for the K distances.
    """
    _check_codes(codes, "codes")
    code_shape = (codes.shape[1], codes.shape[2])
    if not isinstance(boundary, Boundary):
        boundary = Boundary(fit_boundary(boundary, code_shape))
    direction = boundary.direction  # [1, C] or [L, C]
    if direction.ndim != 2 or direction.shape[0] not in (1, code_shape[0]) or direction.shape[1] != code_shape[1]:
        raise BoundaryError(f"a boundary direction {list(direction.shape)} does not fit codes {list(code_shape)}; "
                            f"expected [1, {code_shape[1]}] or {list(code_shape)}")
    selected = parse_layers(boundary.layers if layers is None else layers, code_shape[0])
    if distances is None:
        start, end, count = DEFAULT_DISTANCES
        distances = torch.linspace(start, end, count)
    d = torch.as_tensor(distances, dtype=codes.dtype).to(codes.device).flatten()  # [K]
    b = direction.to(codes).expand(code_shape)[selected]  # [S, C]
    out = codes[:, None].repeat(1, d.shape[0], 1, 1)  # [N, K, L, C]
    out[:, :, selected] += d.view(1, -1, 1, 1) * b[None, None]
    return out


# --- style mixing ---------------------------------------------------------------------------------

def default_mix_layer_start(num_layers: int) -> int:
    """The first layer taken from the style code: 10 of 14 officially.

    The official split keeps the same *fraction* of the synthesis depth for the content (10/14:
    every resolution up to 64² at 256 px). Other depths keep that fraction, rounded to a whole
    resolution block (two layers per resolution), since both layers of a block act at one scale:
    6 of 8 at 32 px, 8 of 10 at 64 px, 12 of 16 at 512 px.
    """
    blocks = num_layers / 2
    return 2 * round(blocks * OFFICIAL_MIX_START / OFFICIAL_LAYERS)


def mix(style_codes: torch.Tensor, content_codes: torch.Tensor, layer_start: int | None = None) -> torch.Tensor:
    """Style mixing: each content code with its layers ≥ ``layer_start`` taken from each style code.

    style_codes ``[S, L, C]``, content_codes ``[K, L, C]`` → ``[S, K, L, C]``.
    """
    _check_codes(style_codes, "style_codes")
    _check_codes(content_codes, "content_codes")
    if style_codes.shape[1:] != content_codes.shape[1:]:
        raise ValueError(f"style codes {list(style_codes.shape)} and content codes {list(content_codes.shape)} "
                         f"come from different models")
    num_layers = content_codes.shape[1]
    if num_layers < 2:
        raise ConfigError("style mixing needs layer-wise (W+) codes; these codes have a single row (L = 1): "
                          "use a StyleGAN pack")
    k = default_mix_layer_start(num_layers) if layer_start is None else layer_start
    if not 0 <= k <= num_layers:
        raise ConfigError(f"layer start {k} is outside 0-{num_layers} for a {num_layers}-layer model")
    out = content_codes[None].repeat(style_codes.shape[0], 1, 1, 1)  # [S, K, L, C]
    out[:, :, k:] = style_codes[:, None, k:]
    return out


# --- synthesis ------------------------------------------------------------------------------------

def synthesize(generator: torch.nn.Module, codes: torch.Tensor, *, batch_size: int = 8,
               callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Images ``[..., 3, R, R]`` in [-1, 1] from codes ``[..., L, C]`` (no truncation, fixed noise),
    on the generator's device; ``callback(n)`` after each batch of n images."""
    lead = codes.shape[:-2]
    flat = codes.reshape(-1, *codes.shape[-2:])
    device = generator.device
    chunks = []
    with frozen(generator), torch.no_grad():
        for batch in flat.split(batch_size):
            chunks.append(generator.synthesize(batch.to(device)))
            if callback is not None:
                callback(batch.shape[0])
    images = torch.cat(chunks) if chunks else torch.empty(0, 3, generator.resolution, generator.resolution)
    return images.reshape(*lead, *images.shape[1:])


def _check_codes(codes: torch.Tensor, name: str) -> None:
    if not isinstance(codes, torch.Tensor) or codes.ndim != 3:
        raise ValueError(f"{name} must be W+ codes [N, L, C]; got "
                         f"{list(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__}")


# --- boundary files -------------------------------------------------------------------------------

def _multiarray():
    try:
        from numpy._core import multiarray  # numpy ≥ 1.26 (the name numpy 2 writes into pickles)
    except ImportError:  # pragma: no cover
        from numpy.core import multiarray
    return multiarray


_SAFE_GLOBALS = {  # the only callables a pickled dict of numpy arrays needs
    ("numpy._core.multiarray", "_reconstruct"): lambda: _multiarray()._reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _multiarray()._reconstruct,
    ("numpy._core.multiarray", "scalar"): lambda: _multiarray().scalar,
    ("numpy.core.multiarray", "scalar"): lambda: _multiarray().scalar,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: __import__("codecs").encode,  # bytes in protocol-2 pickles
}


class _DataUnpickler(pickle.Unpickler):
    """Builds numpy arrays, numpy scalars and Python containers; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        factory = _SAFE_GLOBALS.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"it pickles {module}.{name}")
        return factory()


MAX_BOUNDARY_BYTES = 64 * 1024 * 1024  # a boundary file is [1, L, C] floats plus a small meta_data
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
            wrapper = _DataUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise BoundaryError(f"refusing {path}: {exc}, which a boundary file never needs; only dicts of "
                            f"arrays, lists, numbers and strings are loaded") from None
    except (ValueError, EOFError, OSError, TypeError, AttributeError, IndexError, KeyError, RecursionError,
            MemoryError) as exc:
        raise BoundaryError(f"{path}: corrupt .npy file ({type(exc).__name__}: {exc}); use a boundary file") from None
    if not isinstance(wrapper, np.ndarray) or wrapper.dtype != object or wrapper.shape != () or shape != ():
        raise BoundaryError(f"{path}: an object array of shape {list(shape)}; expected a plain array or the "
                            f"official dict format")
    content = wrapper[()]
    _check_plain_data(content, path)
    return content


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
    _check_plain_data(meta_data, Path(path))
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, {"boundary": array, "meta_data": meta_data}, allow_pickle=True)
    return path
