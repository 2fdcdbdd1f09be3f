"""NVIDIA ``stylegan2-ada-pytorch`` network snapshots (``network-snapshot-*.pkl``), read without their code.

A snapshot is a pickle of ``{'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}`` whose
networks are ``torch_utils.persistence`` objects: each carries the Python source of the module that
defined it, and NVIDIA's unpickler executes that source. Here a restricted unpickler resolves only an
allow-list of globals, each to a function of this module:

- ``torch_utils.persistence._reconstruct_persistent_obj`` → a ``PersistentObject`` record holding the
  class name and the pickled attributes; the embedded source is kept as a string and never run;
- ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` → torch's own tensor rebuild, after
  checking the arguments; each storage is a nested legacy ``torch.save``, read with
  ``torch.load(weights_only=True)``;
- ``collections.OrderedDict``, ``dnnlib.util.EasyDict`` (a plain dict here), and numpy dtypes and
  scalars (module attributes such as ``weight_gain``), rebuilt from their bytes.

Any other global (a TensorFlow pickle, a crafted ``__reduce__``, another class) is refused with a
one-line ``CheckpointError`` before anything is called. The configuration is then inferred from the
tensor shapes and checked against the records' attributes; conditional, StyleGAN3, non-"skip"/"resnet"
and other variants are refused by name.
"""

from __future__ import annotations

import collections
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError
from ..networks.stylegan2 import StyleGAN2Config, StyleGAN2Generator, channel_layout
from ..networks.stylegan2_discriminator import StyleGAN2Discriminator
from ..networks.stylegan2_layers import fir_filter
from ..safety import PickleRefused, read_pickle
from .common import TENSOR_DTYPES, first_line, load_strict, read_torch_file

SNAPSHOT_FORMAT = "nvidia-stylegan2-ada"


class _Refused(PickleRefused):
    """Raised inside the unpickler; turned into one CheckpointError line."""


@dataclass
class PersistentObject:
    """A ``torch_utils.persistence`` object as plain data: never an instance of the pickled class."""

    class_name: str
    state: dict[str, Any]
    source_chars: int = 0  # length of the embedded module source (kept out, never executed)
    children: dict[str, "PersistentObject"] = field(default_factory=dict)

    def attr(self, name: str, default: Any = None) -> Any:
        """A scalar attribute (``c_dim``, ``conv_clamp`` …); anything but None, a number or a short
        string comes back as an ``_Odd`` that compares unequal to everything and prints its type."""
        value = self.state.get(name, default)
        if value is None or isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 100):
            return value
        return _Odd(type(value).__name__)

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """The state_dict this module would have: parameters and persistent buffers, recursively."""
        out: dict[str, torch.Tensor] = {}
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if value is not None and not (group == "_buffers" and name in skip):
                    out[prefix + name] = value
        for name, child in self.children.items():
            out.update(child.tensors(f"{prefix}{name}."))
        return out

    def walk(self, prefix: str = ""):
        """(dotted name, record) for this record and every descendant."""
        yield prefix.rstrip("."), self
        for name, child in self.children.items():
            yield from child.walk(f"{prefix}{name}.")


class _Odd:
    """An attribute value that is not a plain scalar, as a token that is safe to compare and print."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<a {self.kind}>"


def _persistent_object(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise _Refused("a torch_utils.persistence record that is not a class instance")
    state = meta["state"]
    for group in (state, state.get("_parameters") or {}, state.get("_buffers") or {}, state.get("_modules") or {}):
        if not isinstance(group, dict) or not all(isinstance(k, str) and len(k) <= 200 for k in group):
            raise _Refused("a torch_utils.persistence record whose attribute names are not short strings")
    if not isinstance(state.get("_non_persistent_buffers_set", set()), (set, frozenset, list)) or \
            not all(isinstance(k, str) for k in state.get("_non_persistent_buffers_set", ())):
        raise _Refused("a torch_utils.persistence record with a malformed buffer list")
    for group in ("_parameters", "_buffers"):
        if any(v is not None and not isinstance(v, torch.Tensor) for v in (state.get(group) or {}).values()):
            raise _Refused(f"a module whose {group} are not all tensors")
    children = {}
    for name, child in (state.get("_modules") or {}).items():
        if child is None:  # e.g. the epilogue's ``mbstd`` when disabled
            continue
        if not isinstance(child, PersistentObject):
            raise _Refused(f"a submodule {name!r} that is not a persistence record")
        children[name] = child
    class_name, source = meta.get("class_name"), meta.get("module_src") or ""
    if not isinstance(class_name, str) or len(class_name) > 200 or not isinstance(source, str):
        raise _Refused("a torch_utils.persistence record whose class name or source is not a short string")
    return PersistentObject(class_name=class_name, state=state, source_chars=len(source), children=children)


class _EasyDict(dict):
    """``dnnlib.util.EasyDict`` as a plain dict."""


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    if not isinstance(storage, torch.storage.TypedStorage) or backward_hooks or metadata:
        raise _Refused("a tensor with an unexpected storage, hooks or metadata")
    if not all(isinstance(v, int) for v in (storage_offset, *size, *stride)) or len(size) != len(stride):
        raise _Refused("a tensor with a malformed shape")
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, tuple(size), tuple(stride), False,
                                           collections.OrderedDict())


def _rebuild_parameter(data, requires_grad, backward_hooks, *rest):
    if not isinstance(data, torch.Tensor) or backward_hooks or rest:
        raise _Refused("a parameter with hooks or state")
    return data  # a plain tensor: only the values are used


def _load_storage(data: Any) -> torch.storage.TypedStorage:
    if not isinstance(data, (bytes, bytearray)):
        raise _Refused("a storage that is not bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation
        storage = read_torch_file(bytes(data), "a tensor storage in the snapshot", kind="tensor storage")
    if not isinstance(storage, torch.storage.TypedStorage) or storage.dtype not in TENSOR_DTYPES:
        raise _Refused("a storage record that holds something else")
    return storage


_NUMPY_DTYPES = {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"}


class _NumpyDType:
    """A numpy dtype reference (``numpy.dtype('f8', False, True)`` plus its pickled state)."""

    def __init__(self, name: Any, align: Any = False, copy: Any = True) -> None:
        if name not in _NUMPY_DTYPES:
            raise _Refused(f"numpy dtype {name!r}")
        self.name, self.byteorder = name, "<"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = "<" if state[1] == "=" else state[1]


def _numpy_scalar(dtype: Any, data: Any = None) -> float | int | bool:
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, (bytes, bytearray)):
        raise _Refused("a numpy scalar that is not a plain number")
    order = "<" if dtype.byteorder == "|" else dtype.byteorder
    value = np.frombuffer(bytes(data), dtype=np.dtype(order + dtype.name), count=1)[0]
    return value.item()


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_object,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("numpy", "dtype"): _NumpyDType,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


def _find_class(module: str, name: str) -> Any:
    if (module, name) in _ALLOWED:
        return _ALLOWED[(module, name)]
    if module.startswith("dnnlib.tflib"):
        raise _Refused(f"{module}.{name}: a TensorFlow StyleGAN2 pickle; only stylegan2-ada-pytorch "
                       f"snapshots are read")
    raise _Refused(f"{module}.{name}, which is not on the allow-list of tensor and container types"[:200])


def read_snapshot(path: str | Path) -> dict[str, Any]:
    """The snapshot's top-level dict with networks as ``PersistentObject`` records; runs no code from it.
    The pickle goes through ``safety.read_pickle``: scanned (objects, depth and shared references
    bounded) before anything is built, then unpickled with ``_ALLOWED`` as its only globals."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        data = read_pickle(raw, str(path), find_class=_find_class, error=CheckpointError,
                           refusal="{what}: refused to load: it references {detail}")
    except CheckpointError as exc:  # a storage inside the snapshot names itself only
        raise exc if str(exc).startswith(str(path)) else CheckpointError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data) \
            or not isinstance(data.get("G_ema"), PersistentObject):
        raise CheckpointError(f"{path}: not a stylegan2-ada-pytorch snapshot (no G_ema network)")
    return data


def _fail(source: str, what: str) -> CheckpointError:
    return CheckpointError(f"{source}: {what} is not supported (IDInvert reads unconditional StyleGAN2 "
                           f"config-F snapshots: skip generator, resnet discriminator)")


def _check_filters(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Drop the fixed ``resample_filter`` buffers after checking they are the [1, 3, 3, 1] FIR filter."""
    fir = fir_filter()
    for key in [k for k in state if k.endswith("resample_filter")]:
        value = state.pop(key)
        if value.shape != fir.shape or not torch.allclose(value.float(), fir, atol=1e-7):
            raise _fail(source, f"a resample filter other than [1, 3, 3, 1] ({key})")
    return state


def _channel_base(widths: dict[int, int], source: str) -> tuple[int, int]:
    layout = channel_layout(widths)
    if layout is None:
        raise _fail(source, f"a channel layout that is not min(base // r, max) ({widths})")
    return layout


def _check_generator(g: PersistentObject, source: str) -> None:
    if g.class_name != "Generator" or set(g.children) != {"mapping", "synthesis"}:
        raise _fail(source, f"a G_ema of class {g.class_name!r} with parts {sorted(g.children)}")
    synthesis = g.children["synthesis"]
    if "input" in synthesis.children or any(re.fullmatch(r"L\d+_\d+_\d+", n) for n in synthesis.children):
        raise _fail(source, "StyleGAN3 (alias-free, networks_stylegan3)")
    if g.attr("c_dim", 0) or "embed" in g.children["mapping"].children:
        raise _fail(source, f"a conditional generator (c_dim = {g.attr('c_dim')}, class labels)")
    if g.attr("img_channels", 3) != 3:
        raise _fail(source, f"a generator with {g.attr('img_channels')} image channels")
    for name, rec in g.walk():
        arch, act = rec.attr("architecture"), rec.attr("activation")
        if arch not in (None, "skip"):
            raise _fail(source, f"the {arch!r} generator architecture ({name})")
        if rec.class_name in ("SynthesisLayer", "FullyConnectedLayer") and act not in (None, "lrelu", "linear"):
            raise _fail(source, f"the {act!r} activation ({name})")
        if rec.class_name == "SynthesisLayer" and rec.attr("use_noise") is False:
            raise _fail(source, f"a synthesis layer without noise inputs ({name})")


def _conv_clamps(rec: PersistentObject) -> set[float | None]:
    """The ``conv_clamp`` values of the layers that store one (NVIDIA's blocks only pass it on)."""
    return {r.attr("conv_clamp") for _, r in rec.walk() if "conv_clamp" in r.state}


def _one_clamp(clamps: set, source: str) -> float | None:
    """The single ``conv_clamp`` of a network (None: no clamp), a plain positive number."""
    if len(clamps) > 1:
        raise _fail(source, f"different conv_clamp values per layer ({sorted(map(str, clamps))[:4]})")
    value = clamps.pop() if clamps else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1e6:
        raise _fail(source, f"a conv_clamp of {str(value)[:40]}")
    return float(value)


def _generator_config(g: PersistentObject, state: dict[str, torch.Tensor], source: str) -> StyleGAN2Config:
    fcs = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
    blocks = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    if not fcs or fcs != list(range(len(fcs))) or not blocks or "mapping.w_avg" not in state:
        raise CheckpointError(f"{source}: G_ema lacks the StyleGAN2 mapping/synthesis tensors")
    w_dim = state[f"mapping.fc{fcs[-1]}.weight"].shape[0]
    hidden = {state[f"mapping.fc{i}.weight"].shape[0] for i in fcs}
    if hidden != {w_dim}:
        raise _fail(source, f"a mapping network with hidden widths {sorted(hidden)} ≠ w_dim {w_dim}")
    widths = {r: state[f"synthesis.b{r}.conv1.weight"].shape[0] for r in blocks}
    base, cmax = _channel_base(widths, source)
    clamp = _one_clamp(_conv_clamps(g.children["synthesis"]), source)
    lr_mul = g.children["mapping"].children["fc0"].attr("bias_gain", 0.01)
    if isinstance(lr_mul, bool) or not isinstance(lr_mul, (int, float)):
        raise _fail(source, f"a mapping lr multiplier of {str(lr_mul)[:40]}")
    try:
        return StyleGAN2Config(resolution=max(blocks), z_dim=state["mapping.fc0.weight"].shape[1], w_dim=w_dim,
                               mapping_layers=len(fcs), mapping_lr_mul=float(lr_mul), channel_base=base,
                               channel_max=cmax, conv_clamp=clamp)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: unsupported generator ({exc})") from None


def _discriminator_config(d: PersistentObject, state: dict[str, torch.Tensor], g_config: StyleGAN2Config,
                          source: str) -> StyleGAN2Config:
    if d.class_name != "Discriminator" or "b4" not in d.children:
        raise _fail(source, f"a D of class {d.class_name!r}")
    if d.attr("c_dim", 0) or "mapping" in d.children or d.children["b4"].attr("cmap_dim", 0):
        raise _fail(source, f"a conditional discriminator (c_dim = {d.attr('c_dim')})")
    for name, rec in d.walk():
        if rec.attr("architecture") not in (None, "resnet"):
            raise _fail(source, f"the {rec.attr('architecture')!r} discriminator architecture ({name})")
    res = g_config.resolution
    needed = [f"b{r}.conv0.weight" for r in g_config.block_resolutions[1:]] + ["b4.conv.weight"]
    if any(k not in state for k in needed) or state.get(f"b{res}.fromrgb.weight", torch.empty(0, 0)).shape[1] != 3:
        raise CheckpointError(f"{source}: D is not a {res}px StyleGAN2 discriminator with a 3-channel fromRGB")
    widths = {r: state[f"b{r}.conv0.weight"].shape[0] for r in g_config.block_resolutions[1:]}
    widths[4] = state["b4.conv.weight"].shape[0]
    base, cmax = _channel_base(widths, source)
    mbstd = d.children["b4"].children.get("mbstd")
    group = mbstd.attr("group_size", 4) if mbstd else 4
    channels = state["b4.conv.weight"].shape[1] - widths[4]
    if group is None:
        raise _fail(source, "a discriminator whose minibatch-std group is the whole batch")
    if isinstance(group, bool) or not isinstance(group, int):
        raise _fail(source, f"a minibatch-std group of {str(group)[:40]}")
    # NVIDIA builds the resnet blocks' 1×1 skip layers without conv_clamp; every other layer has the same one
    layers = [(name, r.attr("conv_clamp")) for name, r in d.walk() if "conv_clamp" in r.state]
    skips = {c for name, c in layers if name.endswith(".skip")}
    clamps = {c for name, c in layers if not name.endswith(".skip")}
    if skips - {None}:
        raise _fail(source, f"a discriminator with conv_clamp {str(sorted(map(str, skips))[:4])[:60]} on its skip "
                            f"layers (NVIDIA's have none)")
    clamp = _one_clamp(clamps, source)
    try:
        return StyleGAN2Config(resolution=res, z_dim=g_config.z_dim, w_dim=g_config.w_dim,
                               mapping_layers=g_config.mapping_layers, mapping_lr_mul=g_config.mapping_lr_mul,
                               channel_base=base, channel_max=cmax, conv_clamp=clamp,
                               mbstd_group_size=int(group), mbstd_channels=int(channels))
    except ConfigError as exc:
        raise CheckpointError(f"{source}: unsupported discriminator ({exc})") from None


def _fp16_blocks(rec: PersistentObject) -> list[str]:
    return [name for name, r in rec.walk() if r.attr("use_fp16")]


def _read_generator(g: PersistentObject, source: str) -> tuple[StyleGAN2Generator, StyleGAN2Config]:
    _check_generator(g, source)
    g_state = _check_filters(g.tensors(), source)
    config = _generator_config(g, g_state, source)
    return load_strict(StyleGAN2Generator(config), g_state, f"{source} [G_ema]").eval(), config


def _read_discriminator(d: PersistentObject, config: StyleGAN2Config, source: str) -> StyleGAN2Discriminator:
    d_state = _check_filters(d.tensors(), source)
    d_config = _discriminator_config(d, d_state, config, source)
    return load_strict(StyleGAN2Discriminator(d_config), d_state, f"{source} [D]").eval()


def _malformed_is_one_line(read, *args):
    """``read(*args)``; a record whose tensors or attributes have shapes or types no snapshot has (a
    0-d weight, a list where a number belongs) becomes one CheckpointError line."""
    try:
        return read(*args)
    except (IndexError, KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"{args[-1]}: a damaged or crafted snapshot ({type(exc).__name__}: "
                              f"{first_line(exc, 120)})") from None


def load_nvidia_snapshot(path: str | Path, *, with_discriminator: bool = True
                         ) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator | None, dict[str, Any]]:
    """``(G_ema, D or None, info)`` from a ``network-snapshot-*.pkl``, in eval mode on the CPU.

    Every configuration of stylegan2-ada-pytorch's ``train.py`` is read: G_ema alone or with G and D,
    an ``augment_pipe`` (ignored), ``conv_clamp`` (applied as in the original, see
    ``networks.stylegan2``) and ``num_fp16_res`` top blocks, which NVIDIA runs in float16 and which are
    computed in float32 here (NVIDIA's ``force_fp32=True`` result; ``info["fp16_blocks"]`` names them).
    A discriminator that cannot be read never stops the generator: ``D`` is then None and
    ``info["discriminator_skipped"]`` says why in one line.
    """
    source = str(path)
    data = read_snapshot(path)
    g = data["G_ema"]
    generator, config = _malformed_is_one_line(_read_generator, g, source)
    info: dict[str, Any] = {"format": SNAPSHOT_FORMAT, "generator": "G_ema",
                            "embedded_source_chars": g.source_chars, "fp16_blocks": _fp16_blocks(g),
                            "ignored": sorted(k for k in data if k not in ("G_ema", "D"))}
    discriminator = None
    d = data.get("D")
    if with_discriminator and isinstance(d, PersistentObject):
        try:
            discriminator = _malformed_is_one_line(_read_discriminator, d, config, source)
        except CheckpointError as exc:
            info["discriminator_skipped"] = first_line(exc)
        else:
            info["discriminator"] = "D"
            info["fp16_blocks"] += [f"D.{n}" for n in _fp16_blocks(d)]
    elif with_discriminator and d is not None:
        info["discriminator_skipped"] = f"{source}: D is a {type(d).__name__}, not a network"
    return generator, discriminator, info
