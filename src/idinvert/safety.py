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

import io
import json
import math
import os
import pickle
import pickletools
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import ConfigError, IdinvertError, OutputError

MARKER = ".idinvert-output"  # written into every output folder idinvert publishes
RESERVED_OUTPUTS = ("manifest.json", "sheet.png", "index.html", "codes.npy")  # every verb may write these

# --- output folders -------------------------------------------------------------------------------


def is_idinvert_folder(folder: Path) -> bool:
    """Whether ``folder`` was written by idinvert: its marker, a model pack, an older output folder or an
    older training run (``checkpoint.pt`` beside ``train_config.json``)."""
    if (folder / MARKER).is_file() or ((folder / "checkpoint.pt").is_file() and (folder / "train_config.json").is_file()):
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


def claim_output_file(out: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (),
                      what: str = "--out", suffix: str | None = None, ours=None) -> Path:
    """The output-folder rule for a verb whose output is one file: never an input or inside one, of the
    verb's own kind (``suffix``), and an existing file is replaced only when ``ours(path)`` recognises it
    as what idinvert writes there; checked before any work. Returns it as a ``Path``."""
    out = Path(out)
    if suffix is not None and out.suffix.lower() != suffix:
        raise OutputError(f"{what} {out}: the file must end in {suffix}; choose another {what}")
    target = out.resolve()
    for item in inputs:
        if item is None:
            continue
        source = Path(item).resolve()
        if source == target or source in target.parents:
            raise OutputError(f"{what} {out} is (inside) an input ({item}); write it somewhere else")
    if out.is_symlink() or (out.exists() and not out.is_file()):
        raise OutputError(f"{what} {out} exists and is not a plain file; choose another {what}")
    if out.exists() and (ours is None or not ours(out)):
        raise OutputError(f"{what} {out} is a file idinvert did not write; idinvert replaces only its own "
                          f"files: delete it or choose another {what}")
    check_writable(out.parent, what)
    return out


def mark_output_dir(folder: Path) -> None:
    """Write the marker that lets a later run replace this folder's files."""
    (folder / MARKER).write_text("written by idinvert; its files may be replaced by a later idinvert run\n",
                                 encoding="utf-8")


# --- names ----------------------------------------------------------------------------------------

MAX_NAME = 80  # characters of a name derived from input contents


def safe_name(text: object, fallback: str = "image") -> str:
    """A file-name stem from untrusted text: ``[A-Za-z0-9._-]`` only, no leading dot or dash (``-rf_ori.png``
    would be an option to ``rm *``), at most MAX_NAME."""
    name = re.sub(r"[^\w.-]+", "_", str(text)[:4 * MAX_NAME]).lstrip("._-").rstrip("._")[:MAX_NAME].rstrip("._")
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


def load_npz(path: Path, what: str | None = None, *, error: type[IdinvertError] = ConfigError,
             max_bytes: int = MAX_NPY_BYTES, kinds: str = "biufU") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (``np.savez``), each header checked as ``load_npy`` checks one —
    a dtype of ``kinds`` (never objects), a size within ``max_bytes`` in all and within the member's
    data — before anything is allocated; a truncated, empty or foreign file is one line."""

    what = what or str(path)
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if not members or len(members) > 1000:
                raise error(f"{what}: not an .npz file of arrays ({len(members)} members)")
            for member in members:
                if not member.filename.endswith(".npy") or member.compress_type != zipfile.ZIP_STORED:
                    raise error(f"{what}: {member.filename[:60]!r} is not an array np.savez writes")
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in ((1, 0), (2, 0), (3, 0)):
                        raise error(f"{what}: unsupported .npy version {version} in {member.filename[:60]}")
                    shape, _, dtype = _read_header(f, version)
                    offset = f.tell()
                if dtype.kind not in kinds or dtype.hasobject:
                    raise error(f"{what}: {member.filename[:60]} is an array of dtype {dtype}; expected numbers "
                                f"or text")
                nbytes = math.prod(shape) * dtype.itemsize
                total += nbytes
                if total > max_bytes or nbytes > member.file_size - offset:
                    raise error(f"{what}: {member.filename[:60]} claims {list(shape)[:4]} of {dtype} "
                                f"({nbytes:,} bytes) but holds {member.file_size - offset:,}; the file is "
                                f"truncated or crafted")
            return {m.filename[:-4]: np.load(archive.open(m), allow_pickle=False) for m in members}
    except IdinvertError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, SyntaxError, TypeError, KeyError) as exc:
        text = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        raise error(f"{what}: not a readable .npz file ({text})") from None


# --- pickles from files ---------------------------------------------------------------------------
#
# Every pickle idinvert reads (NVIDIA snapshots, object .npy boundaries, the numpy pickles of asset
# packages, and the data.pkl of every torch file) is first scanned without building anything: the scan
# follows the pickle machine's stack and memo with a size record per object, so an object that the
# memo shares is counted as often as it is used. A 300-byte pickle of a tuple that holds the same
# tuple twice, forty levels deep, describes 2⁴⁰ nodes; hashing it as a dict key or printing it never
# ends, and the scan refuses it before anything hashes or prints it.

MAX_PICKLE_NODES = 5_000_000  # objects, every shared reference counted (a 1024 px NVIDIA snapshot: ~0.1 M)
MAX_PICKLE_DEPTH = 100  # nesting (a NVIDIA snapshot: ~40; a torch checkpoint: ~10)
PICKLE_SLACK_BYTES = 64 * 1024 * 1024  # strings and bytes beyond the file's own size, counted per reference


class PickleRefused(Exception):
    """Raised by a ``find_class`` of ``read_pickle``: the pickle names a global that is not allowed."""


class _Built:
    """The scan's record of one object: nodes and payload bytes as if no reference were shared."""

    __slots__ = ("nodes", "nbytes", "depth", "used")

    def __init__(self, nodes: int = 1, nbytes: int = 0, depth: int = 0) -> None:
        self.nodes, self.nbytes, self.depth, self.used = nodes, nbytes, depth, False


_MARK = object()
_PICKLE_LEAVES = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING",
                  "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "UNICODE",
                  "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "FLOAT", "BINFLOAT", "NONE", "NEWTRUE",
                  "NEWFALSE", "EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_SET", "GLOBAL", "PERSID"}
_PICKLE_MAKE = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3, "STACK_GLOBAL": 2, "REDUCE": 2, "NEWOBJ": 2,
                "NEWOBJ_EX": 3, "BINPERSID": 1}  # pop n, push one object made of them
_PICKLE_MAKE_FROM_MARK = {"TUPLE", "LIST", "DICT", "FROZENSET", "OBJ", "INST"}
_PICKLE_GROW = {"APPEND": 1, "SETITEM": 2, "BUILD": 1}  # pop n, add them to the object below
_PICKLE_GROW_FROM_MARK = {"APPENDS", "SETITEMS", "ADDITEMS"}
_PICKLE_NOOPS = {"PROTO", "FRAME", "READONLY_BUFFER"}


def scan_pickle(stream, what: str, *, error: type[IdinvertError] = ConfigError, max_nodes: int = MAX_PICKLE_NODES,
                max_depth: int = MAX_PICKLE_DEPTH, max_bytes: int | None = None, kind: str = "pickle") -> int:
    """Follow one pickle in ``stream`` (from its position up to STOP) without building anything;
    refuse it when an object it builds would hold more than ``max_nodes`` nodes or ``max_bytes`` of
    strings, or nest deeper than ``max_depth``, counting every shared reference as often as it is
    used. Returns the node count of the result. Leaves ``stream`` after the pickle."""

    max_bytes = PICKLE_SLACK_BYTES if max_bytes is None else max_bytes
    stack: list[Any] = []
    memo: dict[int, _Built] = {}

    def too_big(node: _Built) -> _Built:
        if node.depth > max_depth:
            raise error(f"refusing {what}: its pickled data is nested deeper than {max_depth} levels")
        if node.nodes > max_nodes or node.nbytes > max_bytes:
            raise error(f"refusing {what}: its pickle builds an object of more than {max_nodes:,} nodes or "
                        f"{max_bytes / 1e6:.0f} MB of strings, counting each use of a shared object (a few "
                        f"bytes can describe 2⁴⁰ nodes that hashing or printing would visit)")
        return node

    def pop_to_mark() -> list[_Built]:
        items = []
        while stack and stack[-1] is not _MARK:
            items.append(stack.pop())
        if not stack:
            raise ValueError("no MARK on the stack")
        stack.pop()
        return items

    def pop(n: int) -> list[_Built]:
        if len(stack) < n or any(item is _MARK for item in stack[len(stack) - n:]):
            raise ValueError("stack underflow")
        items = stack[len(stack) - n:]
        del stack[len(stack) - n:]
        return items

    def made_of(parts: list[_Built]) -> _Built:
        for part in parts:
            part.used = True
        return too_big(_Built(1 + sum(p.nodes for p in parts), sum(p.nbytes for p in parts),
                              1 + max((p.depth for p in parts), default=0)))

    def grow(parts: list[_Built]) -> None:
        if not stack or stack[-1] is _MARK:
            raise ValueError("stack underflow")
        target = stack[-1]
        if target.used or any(p is target for p in parts):
            raise error(f"refusing {what}: its pickle changes an object after using it (a self-referencing "
                        f"structure, which no weight or boundary file holds)")
        for part in parts:
            part.used = True
        target.nodes += sum(p.nodes for p in parts)
        target.nbytes += sum(p.nbytes for p in parts)
        target.depth = max(target.depth, 1 + max((p.depth for p in parts), default=0))
        too_big(target)

    try:
        for opcode, arg, _ in pickletools.genops(stream):
            name = opcode.name
            if name in _PICKLE_LEAVES:
                stack.append(_Built(1, len(arg) if isinstance(arg, (str, bytes, bytearray)) else 0))
            elif name in _PICKLE_MAKE:
                stack.append(made_of(pop(_PICKLE_MAKE[name])))
            elif name in _PICKLE_MAKE_FROM_MARK:
                stack.append(made_of(pop_to_mark()))
            elif name in _PICKLE_GROW:
                grow(pop(_PICKLE_GROW[name]))
            elif name in _PICKLE_GROW_FROM_MARK:
                grow(pop_to_mark())
            elif name == "MARK":
                stack.append(_MARK)
            elif name == "POP":  # the top object, or the top MARK
                if not stack:
                    raise ValueError("stack underflow")
                stack.pop()
            elif name == "POP_MARK":
                pop_to_mark()
            elif name == "DUP":
                stack.append(pop(1)[0])
                stack.append(stack[-1])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                if not stack or stack[-1] is _MARK:
                    raise ValueError("nothing to memoize")
                memo[len(memo) if name == "MEMOIZE" else int(arg)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[int(arg)])
            elif name == "STOP":
                result = pop(1)[0]
                return result.nodes
            elif name not in _PICKLE_NOOPS:  # EXT1/2/4 (copyreg's registry), NEXT_BUFFER (out-of-band data)
                raise error(f"refusing {what}: its pickle uses {name}, which no weight or boundary file needs")
    except IdinvertError:
        raise
    except Exception as exc:  # a truncated or malformed stream: pickletools raises many types
        text = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        raise error(f"{what}: not a readable {kind} ({text})") from None
    raise error(f"{what}: not a readable {kind} (it ends before its STOP)")


def read_pickle(data: bytes, what: str, *, find_class, error: type[IdinvertError] = ConfigError,
                persistent_load=None, encoding: str = "ASCII", max_depth: int = MAX_PICKLE_DEPTH,
                refusal: str = "refusing {what}: it pickles {detail}") -> Any:
    """The one way idinvert unpickles: ``scan_pickle`` first, then an unpickler whose ``find_class``
    (module, name) → object raises ``PickleRefused`` for anything it does not allow; no other global
    is ever imported or called. Errors are one line of ``error``; ``refusal`` words a refused global."""

    buffer = io.BytesIO(data)
    scan_pickle(buffer, what, error=error, max_bytes=len(data) + PICKLE_SLACK_BYTES, max_depth=max_depth)

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            return find_class(module, name)

        def persistent_load(self, pid: Any) -> Any:
            if persistent_load is None:
                raise PickleRefused("a persistent id")
            return persistent_load(pid)

    try:
        return Restricted(io.BytesIO(data), encoding=encoding).load()
    except PickleRefused as exc:
        raise error(refusal.format(what=what, detail=str(exc)[:200])) from None
    except IdinvertError:
        raise
    except Exception as exc:  # a malformed stream or arguments an allowed callable refuses
        text = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        raise error(f"{what}: not a readable pickle ({text})") from None


def _multiarray():
    try:
        from numpy._core import multiarray  # numpy ≥ 1.26 (the name numpy 2 writes into pickles)
    except ImportError:  # pragma: no cover
        from numpy.core import multiarray
    return multiarray


NUMPY_GLOBALS = {  # the only callables a pickle of numpy arrays, numbers and containers needs
    ("numpy._core.multiarray", "_reconstruct"): lambda: _multiarray()._reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _multiarray()._reconstruct,
    ("numpy._core.multiarray", "scalar"): lambda: _multiarray().scalar,
    ("numpy.core.multiarray", "scalar"): lambda: _multiarray().scalar,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: __import__("codecs").encode,  # bytes in protocol-2 pickles
}


def _numpy_global(module: str, name: str) -> Any:
    factory = NUMPY_GLOBALS.get((module, name))
    if factory is None:
        raise PickleRefused(f"{module}.{name}"[:120])
    return factory()


def read_numpy_pickle(data: bytes, what: str, *, error: type[IdinvertError] = ConfigError,
                      max_depth: int = MAX_PICKLE_DEPTH,
                      refusal: str = "refusing {what}: it pickles {detail}; only numpy arrays, numbers and "
                                     "containers are read") -> Any:
    """A pickle of numpy arrays, numpy scalars and Python containers (an object ``.npy``, a Flax
    checkpoint of an asset package), read through ``read_pickle``; any other global is refused."""
    return read_pickle(data, what, find_class=_numpy_global, error=error, encoding="latin1", max_depth=max_depth,
                       refusal=refusal)
