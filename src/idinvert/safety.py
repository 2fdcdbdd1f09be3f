"""The rules every entry point follows for what it reads and where it writes, in one place.

Each rule is one function that the verbs, the pack reader and the editor call, so that a rule
cannot be forgotten by one of them (``docs/security.md`` lists the guarantees and their tests):

- **Output folders** (``claim_output_dir``): created, or written into, only when new, empty or
  written by idinvert (they carry ``MARKER``, a pack's ``config.json``, or an older idinvert
  ``manifest.json``); never when the folder is also an input or holds one; a file, a folder
  that cannot be written and a reserved output name taken by a folder are refused before any work.
- **Names** (``safe_name``, ``unique_names``, ``inside``): every file name derived from input
  contents (image stems, manifest names, attribute names) is reduced to ``[A-Za-z0-9._-]``, made
  unique, and checked to stay inside its folder.
- **Numbers** (``check_int``, ``check_float``, ``check_seed``): options and numbers from files are
  finite and in a stated range before anything is allocated or run.
- **Structures from files** (``check_plain_data``, ``parse_json``): bounded depth and size, walked
  once (shared sub-lists cannot make the walk exponential).
- **Arrays from files** (``load_npy``): the ``.npy`` header is read and checked (dtype, shape,
  size against the file and a limit) before the data is allocated; pickles are never loaded here.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import ConfigError, IdinvertError, OutputError

MARKER = ".idinvert-output"  # written into every output folder idinvert publishes
RESERVED_OUTPUTS = ("manifest.json", "sheet.png", "index.html", "codes.npy")  # every verb may write these

# --- output folders -------------------------------------------------------------------------------


def is_idinvert_folder(folder: Path) -> bool:
    """Whether ``folder`` was written by idinvert: its marker, a model pack, or an older output folder."""
    if (folder / MARKER).is_file():
        return True
    for name, key, value in (("config.json", "format", "idinvert-pack"), ("manifest.json", "verb", None)):
        path = folder / name
        try:
            if path.is_file() and path.stat().st_size < 64 * 1024 * 1024:
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, dict) and (data.get(key) == value if value else isinstance(data.get(key), str)):
                    return True
        except (OSError, ValueError, RecursionError):
            pass
    return False


def check_replaceable(folder: Path, what: str = "--out") -> None:
    """Refuse a folder that is not empty and was not written by idinvert (its files are not ours)."""
    try:
        empty = not any(folder.iterdir())
    except OSError as exc:
        raise OutputError(f"{what} {folder}: cannot read the folder ({exc.strerror}); choose another") from None
    if not empty and not is_idinvert_folder(folder):
        raise OutputError(f"{what} {folder} holds files that idinvert did not write; idinvert only writes into "
                          f"new, empty or its own output folders: choose another {what}")


def check_not_input(out: Path, inputs: Iterable[str | os.PathLike | None], what: str = "--out") -> None:
    """Refuse an output folder that is one of the inputs or holds one (writing would change the inputs)."""
    target = out.resolve()
    for item in inputs:
        if item is None:
            continue
        source = Path(item).resolve()
        if source == target or target in source.parents:
            raise OutputError(f"{what} {out} is also an input ({item}); write the results to another folder")


def check_writable(out: Path, what: str = "--out") -> None:
    """Refuse, before any work, an output location that cannot be created or written."""
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{what} {out}: {existing} is not a folder; choose another {what}")
    probes = [existing] if existing != out else [out, out.parent]  # staging is made beside the folder
    for folder in probes:
        if not folder.is_dir():
            continue
        try:
            fd, probe = tempfile.mkstemp(prefix=".idinvert-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise OutputError(f"{what} {out}: cannot write in {folder} ({exc.strerror}); choose another {what}") \
                from None


def claim_output_dir(out: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (),
                     what: str = "--out") -> Path:
    """Every check on an output folder, made before the work starts; returns it as a ``Path``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a folder; choose another {what}")
    check_not_input(out, inputs, what)
    if out.is_dir():
        check_replaceable(out, what)
        for name in RESERVED_OUTPUTS:
            if (out / name).exists() and not (out / name).is_file():
                raise OutputError(f"{what} {out}: {out / name} is not a file, so the results cannot be written "
                                  f"there; remove it or choose another {what}")
    check_writable(out, what)
    return out


def mark_output_dir(folder: Path) -> None:
    """Write the marker that lets a later run replace this folder's files."""
    (folder / MARKER).write_text("written by idinvert; its files may be replaced by a later idinvert run\n",
                                 encoding="utf-8")


# --- names ----------------------------------------------------------------------------------------

MAX_NAME = 80  # characters of a name derived from input contents


def safe_name(text: object, fallback: str = "image") -> str:
    """A file-name stem from untrusted text: ``[A-Za-z0-9._-]`` only, no leading dot, at most MAX_NAME."""
    name = re.sub(r"[^\w.-]+", "_", str(text)).strip("._")[:MAX_NAME].rstrip("._")
    return name or fallback


def unique_names(stems: Sequence[object], fallback: str = "image") -> list[str]:
    """Safe, pairwise distinct names: repeats get ``_2``, ``_3`` … skipping names already taken."""
    taken: set[str] = set()
    names = []
    for stem in stems:
        base = safe_name(stem, fallback)
        name, k = base, 1
        while name.lower() in taken:  # case-insensitive file systems would merge Face and face
            k += 1
            name = f"{base}_{k}"
        taken.add(name.lower())
        names.append(name)
    return names


def inside(folder: Path, name: str) -> Path:
    """``folder / name``, refused unless it stays inside ``folder``."""
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents:
        raise OutputError(f"refusing to write {name!r}: it would leave the output folder {folder}")
    return path


def check_names(names: object, source: str, count: int | None = None) -> list[str]:
    """Names read from a file (a manifest's ``names``): plain, distinct file-name stems."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{source}: 'names' must be a list of strings; run `idinvert invert` again")
    if count is not None and len(names) != count:
        raise ConfigError(f"{source}: {len(names)} names for {count} codes; run `idinvert invert` again")
    for n in names:
        if not n or safe_name(n, fallback="") != n:
            raise ConfigError(f"{source}: the name {n[:60]!r} is not a plain file name; run `idinvert invert` "
                              f"again")
    if len({n.lower() for n in names}) != len(names):
        raise ConfigError(f"{source}: the names repeat; run `idinvert invert` again")
    return names


# --- numbers --------------------------------------------------------------------------------------

def check_int(value: object, what: str, low: int, high: int, hint: str = "") -> int:
    """A whole number in [low, high] (bools and floats refused), or a one-line ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        shown = str(value)[:40]
        raise ConfigError(f"{what} {shown}: use a whole number from {low:,} to {high:,}" + (f" ({hint})" if hint else ""))
    return int(value)


def check_float(value: object, what: str, low: float, high: float, *, low_open: bool = False,
                hint: str = "") -> float:
    """A finite number in [low, high] (or (low, high] with ``low_open``), or a one-line ConfigError."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
          and math.isfinite(float(value)) and (low < value if low_open else low <= value) and value <= high)
    if not ok:
        bracket = "(" if low_open else "["
        raise ConfigError(f"{what} {str(value)[:40]}: use a finite number in {bracket}{low:g}, {high:g}]"
                          + (f" ({hint})" if hint else ""))
    return float(value)


MAX_SEED = 2**63 - 1


def check_seed(value: object, what: str = "--seed") -> int:
    return check_int(value, what, 0, MAX_SEED)


# --- structures from files ------------------------------------------------------------------------

MAX_DEPTH = 8  # nesting of dicts and lists in a boundary's meta_data or a config
MAX_NODES = 10_000  # containers, keys and scalars visited
MAX_ELEMENTS = 1_000_000  # numbers in arrays and characters in strings


def check_plain_data(value: Any, what: str, *, error: type[IdinvertError] = ConfigError,
                     max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES,
                     max_elements: int = MAX_ELEMENTS) -> None:
    """Refuse anything but dicts (string keys), lists, numeric arrays, numbers and strings, or a
    structure deeper or larger than the limits. Every reference is counted, so shared sub-lists
    count as often as they appear and the walk stops at the budget (never exponential)."""
    nodes = elements = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes or depth > max_depth:
            raise error(f"refusing {what}: its data is nested deeper than {max_depth} levels or holds more than "
                        f"{max_nodes:,} entries")
        if isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise error(f"refusing {what}: it holds a dict key of type {type(k).__name__}; only string "
                                f"keys are accepted")
                elements += len(k)
                stack.append((v, depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, np.ndarray) and item.dtype.kind in "biuf":
            elements += item.size
        elif isinstance(item, (str, bytes)):
            elements += len(item)
        elif isinstance(item, (int, float, bool, type(None))) or \
                (isinstance(item, np.generic) and item.dtype.kind in "biufSU"):
            pass
        else:
            kind = f"a {item.dtype} array" if isinstance(item, np.ndarray) else f"a {type(item).__name__}"
            raise error(f"refusing {what}: it holds {kind}; only dicts of numeric arrays, lists, numbers and "
                        f"strings are accepted")
        if elements > max_elements:
            raise error(f"refusing {what}: it holds more than {max_elements:,} values")


MAX_JSON_BYTES = 256 * 1024 * 1024


def parse_json(text: str | bytes, what: str, *, error: type[IdinvertError] = ConfigError,
               max_bytes: int = MAX_JSON_BYTES, max_depth: int = 32) -> Any:
    """JSON with a size and depth limit (no RecursionError, no NaN/Infinity literals)."""
    if len(text) > max_bytes:
        raise error(f"{what} is larger than {max_bytes // 1024 // 1024} MB")

    def no_constants(name: str) -> float:
        raise ValueError(f"{name} is not JSON; use finite numbers")

    try:
        data = json.loads(text, parse_constant=no_constants)
    except RecursionError:
        raise error(f"{what}: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{what} is not valid JSON ({str(exc)[:80]})") from None
    stack = [(data, 0)]
    while stack:  # containers only: the parse above already bounded the size
        item, depth = stack.pop()
        if depth > max_depth:
            raise error(f"{what}: JSON nested deeper than {max_depth} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return data


def read_json(path: Path, what: str | None = None, *, error: type[IdinvertError] = ConfigError,
              max_bytes: int = MAX_JSON_BYTES) -> Any:
    what = what or str(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{what} is larger than {max_bytes // 1024 // 1024} MB")
        return parse_json(path.read_bytes(), what, error=error, max_bytes=max_bytes)
    except OSError as exc:
        raise error(f"{what}: cannot read it ({exc.strerror})") from None


# --- arrays from files ----------------------------------------------------------------------------

MAX_NPY_BYTES = 4 * 1024**3  # the largest array read from a user's .npy (dataset-scale codes fit)


def npy_header(path: Path, what: str | None = None, *, error: type[IdinvertError] = ConfigError
               ) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from a ``.npy`` header, without reading the data."""
    what = what or str(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0), (3, 0)):
                raise error(f"{what}: unsupported .npy version {version}; save it with numpy.save")
            header = _read_header(f, version)
            return header[0], header[2], f.tell()
    except IdinvertError:
        raise
    except (OSError, ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise error(f"{what}: not a readable .npy file ({str(exc)[:100]})") from None


def _read_header(f, version: tuple[int, int]) -> tuple:
    """numpy's own header parser (safe: a literal dict, at most 10 000 characters)."""
    try:
        from numpy.lib._format_impl import _read_array_header  # numpy ≥ 2
    except ImportError:  # pragma: no cover
        from numpy.lib.format import _read_array_header
    return _read_array_header(f, version)


def load_npy(path: Path, what: str | None = None, *, error: type[IdinvertError] = ConfigError,
             max_bytes: int = MAX_NPY_BYTES, kinds: str = "biuf") -> np.ndarray:
    """A numeric array from a ``.npy`` file whose header was checked before any allocation:
    a numeric dtype (``kinds``), a size within ``max_bytes`` and no larger than the file's data."""
    what = what or str(path)
    shape, dtype, offset = npy_header(path, what, error=error)
    if dtype.kind not in kinds or dtype.hasobject:
        raise error(f"{what}: an array of dtype {dtype}; expected numbers")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if nbytes > max_bytes:
        raise error(f"{what}: its header claims an array {list(shape)} of {nbytes / 1e9:.3g} GB, over the "
                    f"{max_bytes / 1e9:g} GB limit")
    available = path.stat().st_size - offset
    if nbytes > available:
        raise error(f"{what}: its header claims {nbytes:,} bytes of data but the file holds {available:,}; "
                    f"the file is truncated or crafted")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise error(f"{what}: not a readable .npy file ({str(exc)[:100]})") from None
