"""Model packs: the project's own checkpoint format.

A pack is a folder::

    config.json                  format, name, every network's configuration, perceptual setup
    generator.safetensors        G (required)
    encoder.safetensors          domain-guided E (optional)
    discriminator.safetensors    D from training (optional)
    conventional_encoder.safetensors   the baseline encoder of Eq. 1 (optional)
    vgg16.safetensors            VGG16 weights when they are not the offline default (optional)
    README.md                    the model card
    boundaries/*.npy, ...        files that later features add (listed in config.json)

Weights hold no code (safetensors); floating tensors may be stored in float16 and are
loaded as float32. This module is the only place that reads or writes packs.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .align import Framing, framing_from_config, utkface_framing
from .boundaries import Boundary, load_boundary, parse_layers
from .errors import BoundaryError, CheckpointError, ConfigError
from .fileio import atomic_path, usual_modes, write_text
from .formats.common import load_strict
from .networks import (DISCRIMINATOR_KINDS, GENERATOR_KINDS, CodeGenerator, Discriminator, DomainGuidedEncoder,
                       VGG16Features)
from .networks.config import DiscriminatorConfig, EncoderConfig, PerceptualConfig, from_dict, to_dict
from .perceptual import build_perceptual
from .safety import check_not_input, check_replaceable, check_writable, read_json

PACK_FORMAT = "idinvert-pack"
PACK_VERSION = 1
DEFAULT_PACK = "default"
BUNDLED_PACKS = {"default": "dcgan-faces64"}  # names users may pass instead of a folder
# packs once bundled and how to make them now (a one-line error instead of "no such pack")
RETIRED_PACKS = {"stylegan-faces64": "it is no longer bundled (it lost every real-face measure to dcgan-faces64); "
                                     "make it with scripts/stylegan_pack/build.sh (minutes on a GPU, see README)"}

_NETWORKS = {  # config.json key: (file, network class, config class); G's and D's by their kinds
    "generator": ("generator.safetensors", None, None),
    "encoder": ("encoder.safetensors", DomainGuidedEncoder, EncoderConfig),
    "discriminator": ("discriminator.safetensors", Discriminator, DiscriminatorConfig),
    "conventional_encoder": ("conventional_encoder.safetensors", DomainGuidedEncoder, EncoderConfig),
}


@dataclass
class ModelPack:
    """Networks and settings loaded from a pack folder."""

    name: str
    generator: CodeGenerator
    perceptual: VGG16Features
    perceptual_config: PerceptualConfig
    encoder: DomainGuidedEncoder | None = None
    discriminator: nn.Module | None = None  # a DISCRIMINATOR_KINDS network (Discriminator, StyleGAN2Discriminator)
    conventional_encoder: DomainGuidedEncoder | None = None
    path: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.generator.device

    @property
    def resolution(self) -> int:
        return self.generator.resolution

    @property
    def code_shape(self) -> tuple[int, int]:
        return self.generator.code_shape

    def networks(self) -> dict[str, nn.Module]:
        nets = {"generator": self.generator, "perceptual": self.perceptual}
        for key in ("encoder", "discriminator", "conventional_encoder"):
            if getattr(self, key) is not None:
                nets[key] = getattr(self, key)
        return nets

    def to(self, device: torch.device | str) -> "ModelPack":
        for net in self.networks().values():
            net.to(device)
        return self

    def lambda_vgg(self, value: float | None = None) -> float:
        """λ_vgg: ``value`` when one is given, else the weight calibrated for the pack's VGG16 features."""
        return self.perceptual_config.lambda_vgg if value is None else value

    def framing(self) -> Framing:
        """How the pack's faces are framed, at its resolution: ``config.json``'s ``framing``, else the
        UTKFace template (what ``--align`` and the editor align photos to)."""
        framing = framing_from_config(self.config, what=f"{self.path}/config.json") or utkface_framing(self.resolution)
        return framing.with_size(self.resolution)

    def boundary_files(self) -> dict[str, str]:
        """Attribute name → boundary file, relative to the pack folder (``config.json``'s ``boundaries``)."""
        entries = self.config.get("boundaries") or {}
        if not isinstance(entries, dict):
            raise CheckpointError(f"{self.path}/config.json: 'boundaries' must map attribute names to files; "
                                  f"fix the pack or pass --boundary FILE")
        return {str(name): str(file) for name, file in entries.items()}

    def boundary_file(self, name: str) -> Path:
        """The file of the boundary ``name`` (a one-line error naming the pack's boundaries otherwise)."""
        files = self.boundary_files()
        if not files:
            raise BoundaryError(f"the model pack {self.path} ships no boundaries; pass --boundary FILE instead of "
                                f"--attribute {name}")
        if name not in files:
            raise BoundaryError(f"the model pack {self.path} has no boundary {name!r}; available: "
                                f"{', '.join(sorted(files))}")
        return self.file(files[name])

    def boundaries(self, names: Sequence[str] | None = None) -> dict[str, Boundary]:
        """The pack's boundaries by name, sorted (all, or ``names``), read for its codes."""
        files = self.boundary_files()
        if names is not None:
            missing = [n for n in names if n not in files]
            if missing:
                raise ConfigError(f"the pack has no boundary {', '.join(missing)}; it has: "
                                  f"{', '.join(sorted(files)) or 'none'}")
            files = {n: files[n] for n in names}
        return {name: load_boundary(self.file(rel), self.code_shape) for name, rel in sorted(files.items())}

    def directions(self, names: Sequence[str] | None = None) -> dict[str, Boundary]:
        """The pack's label-free directions by name, in ``config.json`` order: ``"directions": {name:
        {"file": …, "layers": […]}}`` (the listed layers override the file's); only ``names`` when given."""
        entries = self.config.get("directions") or {}
        if not isinstance(entries, dict):
            raise ConfigError(f"{self.path}/config.json: 'directions' must map names to {{file, layers}}")
        if names is not None:
            unknown = [n for n in names if n not in entries]
            if unknown:
                raise ConfigError(f"the pack {self.name} has no direction {unknown[0][:40]!r}; it has "
                                  f"{', '.join(entries) or 'none'}")
            wanted = set(names)
            entries = {k: v for k, v in entries.items() if k in wanted}
        out = {}
        for name, entry in entries.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                raise ConfigError(f"{self.path}/config.json: direction {str(name)[:40]!r} needs a 'file'")
            b = load_boundary(self.file(entry["file"]), self.code_shape)
            layers = entry.get("layers")
            if layers is not None:
                try:
                    layers = tuple(parse_layers([int(v) for v in layers], self.code_shape[0]))
                except (TypeError, ValueError, ConfigError):
                    raise ConfigError(f"{self.path}/config.json: direction {str(name)[:40]!r} lists layers "
                                      f"{str(layers)[:40]} outside 0-{self.code_shape[0] - 1}") from None
            out[str(name)] = Boundary(b.direction, layers if layers is not None else b.layers, b.meta)
        return out

    REFINE_KEYS = {"steps": int, "layers": list, "locality": bool, "locality_alpha": float,
                   "lpips_threshold": float, "lr": float}

    def refine_settings(self) -> dict[str, Any]:
        """The pack's pivotal-tuning defaults (``config.json``'s ``refine``: any of steps, layers, locality,
        locality_alpha, lpips_threshold, lr), checked for type; {} when the pack keeps PTI's own."""
        entries = self.config.get("refine") or {}
        if not isinstance(entries, dict):
            raise ConfigError(f"{self.path}/config.json: 'refine' must map settings to values")
        out: dict[str, Any] = {}
        for key, value in entries.items():
            kind = self.REFINE_KEYS.get(key)
            ok = kind is not None and (isinstance(value, (int, float)) and not isinstance(value, bool)
                                       if kind is float else isinstance(value, kind) and
                                       (kind is not int or not isinstance(value, bool)))
            if ok and kind is list:
                ok = all(isinstance(v, str) and v for v in value)
            if not ok:
                raise ConfigError(f"{self.path}/config.json: refine setting {str(key)[:40]!r} is not one of "
                                  f"{', '.join(self.REFINE_KEYS)} with the right type")
            out[key] = tuple(value) if kind is list else kind(value)
        return out

    LOCAL_POINTS = ("mouth", "nose", "eyes")  # where a local edit can be centred ("eyes": between the two eyes)
    LOCAL_LIMITS = {"width": (0.1, 3.0), "height": (0.1, 3.0), "stiffness": (1e-4, 10.0)}

    def local_edit(self, attribute: str) -> dict[str, Any] | None:
        """How edits of ``attribute`` in its units keep the rest of the face (``config.json``'s
        ``local_edits``: ``{attribute: {"around": "mouth", "width": w, "height": h, "stiffness": s}}``, an
        ellipse centred on the framing's mouth, its nose or between its eyes, with half-axes in eye distances):
        ``{"center", "radii", "stiffness"}`` in image fractions for ``engine.editing.local_steps``, or None when
        the pack edits ``attribute`` along its boundary."""
        entries = self.config.get("local_edits") or {}
        if not isinstance(entries, dict):
            raise ConfigError(f"{self.path}/config.json: 'local_edits' must map attributes to settings")
        entry = entries.get(attribute)
        if entry is None:
            return None
        where = f"{self.path}/config.json: local edit of {str(attribute)[:40]!r}"
        if not isinstance(entry, dict) or set(entry) != {"around", *self.LOCAL_LIMITS}:
            raise ConfigError(f"{where} needs exactly around, {', '.join(self.LOCAL_LIMITS)}")
        framing = framing_from_config(self.config, what=f"{self.path}/config.json")  # checked points, or None
        points = {} if framing is None else {
            "mouth": framing.mouth, "nose": framing.nose, "eye_left": framing.eye_left, "eye_right": framing.eye_right,
            "eyes": tuple((a + b) / 2 for a, b in zip(framing.eye_left, framing.eye_right))}  # glasses
        if entry["around"] not in self.LOCAL_POINTS or not points.get(entry["around"]):
            raise ConfigError(f"{where}: 'around' must be one of the framing's points "
                              f"{', '.join(p for p in self.LOCAL_POINTS if points.get(p)) or '(none)'}")
        values = {}
        for key, (low, high) in self.LOCAL_LIMITS.items():
            v = entry[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
                raise ConfigError(f"{where}: {key} must be a number from {low:g} to {high:g}")
            values[key] = float(v)
        (cx, cy), (lx, ly), (rx, ry) = (points[entry["around"]], points["eye_left"], points["eye_right"])
        eyes = math.hypot(rx - lx, ry - ly)
        if not all(math.isfinite(c) and 0 <= c <= 1 for c in (cx, cy, lx, ly, rx, ry)) or eyes <= 0:
            raise ConfigError(f"{where}: the pack's framing points must lie inside the image")
        return {"center": (cx, cy), "radii": (values["width"] * eyes, values["height"] * eyes),
                "stiffness": values["stiffness"]}

    def identity(self) -> dict[str, Any]:
        """How manifests name the pack: name, folder, resolution and code shape."""
        return {"name": self.name, "path": str(self.path) if self.path else None,
                "resolution": self.resolution, "code_shape": list(self.code_shape)}

    def file(self, relative: str) -> Path:
        """A file that the pack lists (boundaries, predictors, …), checked to exist."""
        if self.path is None:
            raise CheckpointError(f"pack {self.name!r} has no folder")
        path = (self.path / relative).resolve()
        if self.path.resolve() not in path.parents or not path.is_file():
            raise CheckpointError(f"pack {self.name!r} lists {relative!r}, which is missing from {self.path}")
        return path


def bundled_pack_dir(name: str = DEFAULT_PACK) -> Path:
    folder = BUNDLED_PACKS.get(name, name)
    return Path(str(resources.files("idinvert"))) / "packs" / folder


def resolve_pack(path_or_name: str | os.PathLike | None) -> Path:
    """A pack folder from a path or a bundled name (``None`` means the default pack)."""
    if path_or_name is None:
        path_or_name = DEFAULT_PACK
    path = Path(path_or_name)
    if path.is_dir():
        return path
    if str(path_or_name) in BUNDLED_PACKS or (isinstance(path_or_name, str) and os.sep not in path_or_name
                                              and bundled_pack_dir(path_or_name).is_dir()):
        bundled = bundled_pack_dir(str(path_or_name))
        if (bundled / "config.json").is_file():
            return bundled
        raise CheckpointError(f"no {path_or_name!r} model pack is bundled with this installation; "
                              f"pass --model PACK_DIR (make one with `idinvert convert` or `idinvert train-encoder`)")
    if path.exists():
        raise CheckpointError(f"{path} is not a model pack folder")
    if str(path_or_name) in RETIRED_PACKS:
        raise CheckpointError(f"no {path_or_name} model pack: {RETIRED_PACKS[str(path_or_name)]}")
    raise CheckpointError(f"{path}: no such model pack (expected a folder with config.json, or the name 'default')")


def read_pack_config(folder: Path) -> dict[str, Any]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder} is not a model pack: config.json is missing")
    config = read_json(config_path, error=CheckpointError, max_bytes=MAX_CONFIG_BYTES)
    if not isinstance(config, dict) or config.get("format") != PACK_FORMAT:
        raise CheckpointError(f"{config_path} is not an idinvert model pack (format must be {PACK_FORMAT!r})")
    version = config.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise CheckpointError(f"{config_path}: format_version must be a whole number (this idinvert writes "
                              f"{PACK_VERSION}); restore the pack")
    if version > PACK_VERSION:
        raise CheckpointError(f"{folder} needs a newer idinvert (pack format {version})")
    if not isinstance(config.get("generator"), dict):
        raise CheckpointError(f"{config_path} has no generator configuration")
    return config


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the pack is incomplete")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None


def _inside_pack(folder: Path, relative: object) -> Path:
    """A file a pack's config.json names, refused unless it lies inside the pack folder."""
    if not isinstance(relative, str):
        raise CheckpointError(f"{folder}/config.json names a file by a {type(relative).__name__}, not a string")
    path = (folder / relative).resolve()
    if folder.resolve() not in path.parents:
        raise CheckpointError(f"{folder}/config.json names {relative[:80]!r}, outside the pack folder; "
                              f"restore the pack")
    return path


def _registered_kind(config: dict, key: str, registry: dict) -> str:
    """The kind a pack's ``config.json`` names under ``key`` (packs before the field: "stylegan")."""
    kind = config.get(key, "stylegan")
    if not isinstance(kind, str) or kind not in registry:
        raise CheckpointError(f"unknown {key} {str(kind)[:40]!r} in config.json; this idinvert knows "
                              f"{', '.join(registry)}")
    return kind


def generator_kind(config: dict) -> str:
    """The generator kind a pack's ``config.json`` names (packs before the field: "stylegan")."""
    return _registered_kind(config, "generator_kind", GENERATOR_KINDS)


def discriminator_kind(config: dict) -> str:
    """The discriminator kind a pack's ``config.json`` names (packs before the field: "stylegan")."""
    return _registered_kind(config, "discriminator_kind", DISCRIMINATOR_KINDS)


def load_network(folder: Path, key: str, config: dict) -> nn.Module:
    """One network of a pack: its config checked (bounds), then the weight file's header checked
    against the shapes that config gives (on the meta device, nothing allocated), then built and filled."""
    filename, cls, config_cls = _NETWORKS[key]
    if key == "generator":
        cls, config_cls = GENERATOR_KINDS[generator_kind(config)]
    elif key == "discriminator":
        cls, config_cls = DISCRIMINATOR_KINDS[discriminator_kind(config)]
    net_config = from_dict(config_cls, config[key], what=f"{folder}/config.json [{key}]")
    _check_file_shapes(cls, net_config, folder / filename)
    net = cls(net_config)
    return load_strict(net, _read_safetensors(folder / filename), str(folder / filename)).eval()


MAX_PARAMETERS = 1_000_000_000  # per network (the official encoder has 165 M, the generator 30 M)
MAX_CONFIG_BYTES = 16 * 1024 * 1024


def _check_file_shapes(cls: type, net_config: Any, path: Path) -> None:
    """Build the network on the meta device (no memory), bound its size and compare every shape with
    the safetensors header, so that a config claiming a huge network fails before any allocation."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the pack is incomplete")
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in cls(net_config).state_dict().items()}
    count = sum(math.prod(s) for s in shapes.values())
    if count > MAX_PARAMETERS:
        raise CheckpointError(f"{path}: its configuration makes a network of {count:,} values, over the "
                              f"limit of {MAX_PARAMETERS:,}; the config.json is damaged or crafted")
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    wrong = sorted(k for k in shapes if k in stored and stored[k] != shapes[k])
    if wrong or set(shapes) != set(stored):
        detail = (f"{wrong[0]} is {list(stored[wrong[0]])} but config.json makes {list(shapes[wrong[0]])}"
                  if wrong else "its tensor names differ from the network's")
        raise CheckpointError(f"{path} does not fit the configuration in config.json ({detail}); restore the pack")


def load_pack(path_or_name: str | os.PathLike | None = None, *, device: torch.device | str = "cpu",
              with_discriminator: bool = False) -> ModelPack:
    """Load a pack folder (or the bundled ``"default"``) onto ``device``, networks in eval mode."""
    folder = resolve_pack(path_or_name)
    config = read_pack_config(folder)
    nets = {}
    for key in _NETWORKS:
        if config.get(key) and (key != "discriminator" or with_discriminator):
            nets[key] = load_network(folder, key, config)
    generator = nets["generator"]
    perceptual_entry = config.get("perceptual") or {"convention": "torchvision"}
    if not isinstance(perceptual_entry, dict):
        raise CheckpointError(f"{folder}/config.json: 'perceptual' must be a JSON object")
    perceptual_entry = dict(perceptual_entry)
    weights_file = perceptual_entry.pop("weights", None)
    perceptual_config = from_dict(PerceptualConfig, perceptual_entry, what=f"{folder}/config.json [perceptual]")
    weights_path = _inside_pack(folder, weights_file) if weights_file else None
    perceptual = build_perceptual(perceptual_config, weights_path)
    pack = ModelPack(name=config.get("name", folder.name), generator=generator, perceptual=perceptual,
                     perceptual_config=perceptual_config, encoder=nets.get("encoder"),
                     discriminator=nets.get("discriminator"),
                     conventional_encoder=nets.get("conventional_encoder"), path=folder, config=config)
    _check_code_shapes(pack)
    for attribute in pack.config.get("local_edits") or {}:  # crafted settings fail here, in one line
        pack.local_edit(attribute)
    return pack.to(device)


def _check_code_shapes(pack: ModelPack) -> None:
    for key in ("encoder", "conventional_encoder"):
        enc = getattr(pack, key)
        if enc is not None and (enc.config.num_layers, enc.config.w_dim) != pack.code_shape:
            raise CheckpointError(f"pack {pack.name!r}: the {key} predicts codes "
                                  f"[{enc.config.num_layers}, {enc.config.w_dim}] but the generator takes "
                                  f"{list(pack.code_shape)}")


def _state_for_file(net: nn.Module, half: bool) -> dict[str, torch.Tensor]:
    state = {}
    for k, v in net.state_dict().items():
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.half()
        state[k] = v.contiguous()
    return state


def save_pack(folder: str | os.PathLike, *, name: str, generator: CodeGenerator,
              perceptual_config: PerceptualConfig, encoder: DomainGuidedEncoder | None = None,
              discriminator: nn.Module | None = None,
              conventional_encoder: DomainGuidedEncoder | None = None,
              vgg_state: dict[str, torch.Tensor] | None = None, card: str | None = None,
              half: bool | tuple[str, ...] = False, extra_config: dict[str, Any] | None = None,
              extra_files: dict[str, str | os.PathLike] | None = None, overwrite: bool = False) -> Path:
    """Write a pack folder atomically (built beside the target, then renamed into place).

    ``half``: store floating tensors in float16 — ``True`` for every network, or the names of
    some (e.g. ``("encoder", "conventional_encoder")``); they are loaded back as float32.

    ``extra_files`` maps names inside the pack to files to copy in; ``extra_config`` adds
    top-level entries to ``config.json`` (e.g. ``boundaries``, ``framing``).
    """
    folder = Path(folder)
    check_pack_target(folder, overwrite=overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        config: dict[str, Any] = {"format": PACK_FORMAT, "format_version": PACK_VERSION, "name": name,
                                  "generator_kind": generator.kind}
        if discriminator is not None:
            config["discriminator_kind"] = discriminator.kind
        nets = {"generator": generator, "encoder": encoder, "discriminator": discriminator,
                "conventional_encoder": conventional_encoder}
        for key, net in nets.items():
            config[key] = to_dict(net.config) if net is not None else None
            if net is not None:
                filename = _NETWORKS[key][0]
                in_half = half is True or (not isinstance(half, bool) and key in half)
                save_file(_state_for_file(net, in_half), str(staging / filename),
                          metadata={"network": key, "dtype": "float16" if in_half else "float32"})
        config["perceptual"] = to_dict(perceptual_config)
        if vgg_state is not None:
            save_file({k: v.contiguous() for k, v in vgg_state.items()}, str(staging / "vgg16.safetensors"),
                      metadata={"convention": perceptual_config.convention})
            config["perceptual"]["weights"] = "vgg16.safetensors"
        config.update(extra_config or {})
        for relative, source in (extra_files or {}).items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(card or _default_card(config, generator), encoding="utf-8")
        usual_modes(staging)
        _swap_into_place(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def check_pack_target(folder: Path, *, overwrite: bool = False, inputs=(), what: str = "--out") -> None:
    """Where a pack may be written: a new or empty folder, or (with ``overwrite``) a folder idinvert
    wrote (a pack or an output folder), never one that holds an input. Checked before any work."""
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{what} {folder} exists and is not a folder; choose another {what}")
    check_not_input(folder, inputs, what)
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise CheckpointError(f"{folder} already exists; choose another folder or remove it first")
        check_replaceable(folder, what)
    check_writable(folder, what)


def _swap_into_place(staging: Path, folder: Path) -> None:
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        os.replace(folder, old)
    os.replace(staging, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _default_card(config: dict, generator: CodeGenerator) -> str:
    res, (layers, width) = generator.resolution, generator.code_shape
    lines = [f"# Model pack `{config['name']}`", "",
             f"- generator: {generator.kind}, {res}×{res}, codes [{layers}, {width}]",
             f"- encoder: {'yes' if config.get('encoder') else 'no'}",
             f"- conventional encoder: {'yes' if config.get('conventional_encoder') else 'no'}",
             f"- perceptual: VGG16 conv4_3, {config['perceptual']['convention']} convention, "
             f"λ_vgg = {config['perceptual']['lambda_vgg']}", ""]
    return "\n".join(lines)


def update_pack(folder: str | os.PathLike, *, config_updates: dict[str, Any] | None = None,
                files: dict[str, str | os.PathLike] | None = None) -> None:
    """Add files to an existing pack folder and merge entries into its ``config.json``.

    Each file is copied in atomically before the configuration that names it is rewritten
    (atomically too), so a pack is never left listing a file it does not have.
    """
    folder = resolve_pack(folder)
    config = read_pack_config(folder)
    for relative, source in (files or {}).items():
        target = (folder / relative).resolve()
        if folder.resolve() not in target.parents:
            raise CheckpointError(f"{relative!r} is outside the pack folder")
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    for key, value in (config_updates or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    write_text(folder / "config.json", json.dumps(config, indent=2) + "\n")


NETWORK_KEYS = ("format", "format_version", "name", "generator_kind", "generator", "encoder", "discriminator",
                "discriminator_kind", "conventional_encoder", "perceptual")


def listed_files(pack: ModelPack) -> dict[str, Path]:
    """The files a pack's config names besides its networks: boundaries, directions and the attribute predictor."""
    files = {rel: pack.file(rel) for rel in (pack.config.get("boundaries") or {}).values()}
    files.update({e["file"]: pack.file(e["file"]) for e in (pack.config.get("directions") or {}).values()})
    predictor = pack.config.get("predictor")
    if predictor:
        rel = predictor.get("file", "attributes.safetensors")
        files[rel] = pack.file(rel)
    return files


def copy_pack(pack: ModelPack, folder: str | os.PathLike, *, name: str | None = None,
              half: bool | tuple[str, ...] = False, card: str | None = None, overwrite: bool = False,
              **networks: nn.Module | None) -> Path:
    """Save ``pack`` (with its listed files and extra config) to ``folder``; keyword arguments
    replace networks (``encoder=...``)."""
    nets = {k: getattr(pack, k) for k in ("encoder", "discriminator", "conventional_encoder")}
    nets.update(networks)
    nets = {k: copy.deepcopy(v).cpu().eval() if v is not None else None for k, v in nets.items()}
    vgg = pack.perceptual.state_dict() if (pack.config.get("perceptual") or {}).get("weights") else None
    return save_pack(folder, name=name or pack.name, generator=copy.deepcopy(pack.generator).cpu(),
                     perceptual_config=pack.perceptual_config, vgg_state=vgg, card=card, half=half,
                     overwrite=overwrite, extra_config={k: v for k, v in pack.config.items() if k not in NETWORK_KEYS},
                     extra_files=listed_files(pack), **nets)
