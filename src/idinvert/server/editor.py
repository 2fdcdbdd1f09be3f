"""What the web editor does with a model pack, without any HTTP: find and align faces, invert one,
compose an edited code, render it, paste it back and run semantic diffusion.

Faces are aligned to the pack's framing (``config.json`` ``"framing"``, else the UTKFace template at
the pack's resolution) with dlib. Without dlib, or when no face is found, the centre square of the
photo is used instead and a notice says so. Edits start from the stored W+ code of the inversion,
so moving a slider costs one generator forward pass and never a re-inversion.

Attributes that the pack's predictor reads are edited in their own units: a slider gives the age in
years or the per cent of a yes/no attribute to reach, and ``resolve_amounts`` finds the distance along
the boundary for this face (``attributes.amounts``, on the images the user sees: the tuned generator's
once tuned), cached per photo so that a slider position is searched once.
"""

from __future__ import annotations

import copy
import io
import math
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..attributes import load_predictor
from ..attributes.amounts import (SHOWN_BOUND, Amount, attribute_reader, attribute_unit, boundary_step,
                                  code_renderer, localized, plain_name, predictor_measures, solve_distances)
from ..align import INSTALL_HINT, FaceAlignment, align_faces, check_alignment_available, paste_back
from ..boundaries import Boundary
from ..engine.diffusion import crop_box, diffuse
from ..engine.editing import DEFAULT_DISTANCES, default_mix_layer_start, interpolate, manipulate, mix
from ..engine.inversion import InversionConfig, invert
from ..engine.refine import pack_refine_config, refine
from ..engine.tuned import TunedWeights, synthesize, synthesize_tuned, tuned_between
from ..errors import ConfigError, IdinvertError, ImageError
from ..images import RESAMPLE, decode_image, pil_to_tensor, resize_square, tensor_to_pil
from ..pack import ModelPack

ALIGNMENTS = ("auto", "dlib", "center")
EDIT_LIMIT = 10.0  # the largest |d| the server accepts; the sliders span DEFAULT_DISTANCES (±3)
BLEND_STEPS = 20  # the interpolation slider has BLEND_STEPS + 1 positions, 0 = photo 1, 20 = photo 2
MIN_PHOTO_SIDE = 16
MAX_PHOTO_SIDE = 2048  # longer side a photo is kept at (12 MB as RGB; faces need far less)
PREVIEW_SIDE = 768  # longer side of the photo preview shown in the page
REFINE_STEPS = 60  # tuning steps at most for the editor (the pack's own when fewer; PTI stops early)
AGE_RANGE = 30.0  # the age slider spans the person's predicted age ± this many years
PERCENT_RANGE = (5.0, 95.0)  # the yes/no sliders' ends in per cent (the predictor's sigmoid flattens beyond)


@dataclass
class FaceCrop:
    """One candidate face of a photo, aligned to the model's framing."""

    image: torch.Tensor  # [3, R, R] in [-1, 1]
    box: tuple[float, float, float, float]  # (left, top, right, bottom) in photo pixels
    alignment: FaceAlignment | None  # None: the centre square of the photo, resized
    detector: str  # "hog", "cnn" or "center"
    score: float


@dataclass(frozen=True)
class EditParams:
    """One composed edit: attribute moves on photo 1's code, then interpolation and style mixing."""

    edits: tuple[tuple[str, float], ...] = ()  # (attribute, d): wp'[l] = wp[l] + d·b[l]
    blend: int = 0  # interpolation position 0–BLEND_STEPS towards photo 2's code
    mix_start: int | None = None  # first layer taken from photo 2 (the style); None = no mixing
    faithful: bool = False  # render with the photos' tuned generators (PTI) where they have one
    amounts: tuple[tuple[str, float], ...] = ()  # (attribute, value to reach: years, or per cent)
    moves: tuple[tuple[str, float, torch.Tensor], ...] = ()  # (attribute, d, step [L, C]): wp' = wp + d·step

    @property
    def needs_second(self) -> bool:
        return self.blend > 0 or self.mix_start is not None


def decode_photo(data: bytes, *, max_pixels: int, max_side: int = MAX_PHOTO_SIDE) -> Image.Image:
    """Uploaded bytes → 8-bit RGB photo with its EXIF orientation applied (ImageError otherwise).

    The same decoder as the command line (``images.decode_image``): photos over ``max_pixels`` or
    under MIN_PHOTO_SIDE a side are refused before decoding, and larger photos are shrunk to
    ``max_side`` while decoding, so a session holds at most a few megapixels per photo.
    """
    if not data:
        raise ImageError("the upload is empty; choose a photo file")
    try:
        return decode_image(data, name="the photo", max_pixels=max_pixels, min_side=MIN_PHOTO_SIDE,
                            max_side=max_side)
    except ImageError as exc:
        if "not an image" in str(exc) or "unreadable" in str(exc):
            raise ImageError("not an image file (or one Pillow cannot read): upload a PNG, JPEG, WebP, BMP, "
                             "TIFF or GIF photo") from None
        raise


def encode_png(image: torch.Tensor | Image.Image, *, compress_level: int = 6) -> bytes:
    """A tensor ``[3, H, W]`` in [-1, 1] or a PIL image as PNG bytes."""
    img = image if isinstance(image, Image.Image) else tensor_to_pil(image)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def encode_npy(array: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array.detach().float().cpu().numpy(), allow_pickle=False)
    return buffer.getvalue()


def preview_jpeg(photo: Image.Image, faces: list[FaceCrop], chosen: int | None = None) -> bytes:
    """The photo, at most PREVIEW_SIDE on its longer side, with the faces framed and numbered from 1."""
    scale = min(1.0, PREVIEW_SIDE / max(photo.size))
    preview = photo if scale == 1.0 else photo.resize((max(1, round(photo.width * scale)),
                                                       max(1, round(photo.height * scale))), RESAMPLE)
    preview = preview.copy()
    draw = ImageDraw.Draw(preview)
    width = max(2, round(max(preview.size) / 250))
    for k, face in enumerate(faces):
        if face.detector == "center":
            continue
        box = [v * scale for v in face.box]
        colour = (255, 200, 0) if k == chosen else (0, 200, 255)
        draw.rectangle(box, outline=colour, width=width)
        draw.text((box[0] + width + 2, box[1] + width + 1), str(k + 1), fill=colour)
    buffer = io.BytesIO()
    preview.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


class Editor:
    """A model pack prepared for interactive editing (networks frozen, boundaries loaded).

    Rendering is thread-safe: the networks are frozen once here and only read afterwards; tuning and
    tuned rendering run on copies of the generator (see ``__init__``).
    """

    def __init__(self, pack: ModelPack, *, steps: int = 100, alignment: str = "auto") -> None:
        if pack.encoder is None:
            raise ConfigError(f"pack {pack.name!r} has no encoder; the editor's in-domain inversion needs one")
        if steps < 0:
            raise ConfigError(f"steps must be ≥ 0; got {steps}")
        if alignment not in ALIGNMENTS:
            raise ConfigError(f"alignment must be one of {', '.join(ALIGNMENTS)}; got {alignment!r}")
        self.pack = pack
        self.steps = steps
        # "faithful": pivotal tuning with the pack's settings, a modest number of steps for an interactive tool
        self.refine_steps = min(pack.refine_settings().get("steps", REFINE_STEPS), REFINE_STEPS)
        self.predictor = load_predictor(pack) if pack.config.get("predictor") else None
        for net in [*pack.networks().values(), *([self.predictor] if self.predictor is not None else [])]:
            net.eval().requires_grad_(False)  # for the server's lifetime: no parameter gradients
        # Tuning and tuned rendering swap the generator's weights while they run (torch.func.functional_call):
        # on a generator that other threads render with at the same time, a render would use the swapped
        # weights and its frozen() would switch off the gradients the tuning needs. So each has its own copy:
        # the worker's tuning one, the requests' tuned renders another (one at a time); the pack's generator
        # runs only plain forwards, which threads may share.
        self._tuning_pack = copy.copy(pack)
        self._tuning_pack.generator = copy.deepcopy(pack.generator)
        self._tuned_generator = copy.deepcopy(pack.generator)
        self._tuned_pack = copy.copy(pack)  # the pack as the tuned renders see it (local edit steps)
        self._tuned_pack.generator = self._tuned_generator
        self._tuned_rendering = threading.Lock()
        self.boundaries = pack.boundaries()
        # the pack's label-free directions (idinvert directions --add-to-pack) as "direction 1" … "direction K"
        self.directions = {f"direction {k + 1}": b for k, b in enumerate(pack.directions().values())}
        self.boundaries.update(self.directions)
        # attributes edited in units: those the predictor reads (never a label-free direction)
        self.units = {name: ("years" if name == "age" else "percent") for name in self.boundaries
                      if name not in self.directions and predictor_measures(self.predictor, name)}
        self.readers = {name: attribute_reader(self.predictor, name) for name in self.units}
        self.steps_of = {name: boundary_step(self.boundaries[name], pack.code_shape) for name in self.units}
        self.framing = pack.framing()
        self.alignment, self.alignment_notice = self._choose_alignment(alignment)
        self._detecting = threading.Lock()  # dlib's detectors are not safe to share between threads

    # -- set-up -------------------------------------------------------------------------------------

    @staticmethod
    def _choose_alignment(mode: str) -> tuple[str, str | None]:
        if mode == "center":
            return "center", "Face alignment is off: the centre square of each photo is used as it is."
        try:
            check_alignment_available()
        except IdinvertError as exc:
            if mode == "dlib":
                raise
            return "center", (f"Face alignment is unavailable ({exc}), so the centre square of each photo is "
                              f"used as it is; faces that are not centred and upright come out worse. "
                              f"Install it with: {INSTALL_HINT}")
        return "dlib", None

    def describe(self) -> dict:
        """What the page needs to build its controls."""
        num_layers, w_dim = self.pack.code_shape
        box = crop_box(self.pack.resolution)
        low, high, _ = DEFAULT_DISTANCES
        return {
            "pack": {"name": self.pack.name, "resolution": self.pack.resolution, "code_shape": [num_layers, w_dim],
                     "code_space": "W+" if self.pack.generator.layerwise else "z", "device": str(self.pack.device)},
            "steps": self.steps,
            "attributes": [{"name": name, "min": low, "max": high, "step": 0.1,
                            "layers": list(b.layers) if b.layers is not None else None,
                            "kind": "direction" if name in self.directions else "attribute",
                            "title": _slider_title(name, b, name in self.directions),
                            "label": _slider_label(name, name in self.units), "unit": self.units.get(name),
                            "unit_step": 1.0 if name in self.units else None}
                           for name, b in self.boundaries.items()],
            "refine": {"steps": self.refine_steps, "default": True},
            "amounts": {"age_range": AGE_RANGE, "percent_range": list(PERCENT_RANGE)} if self.units else None,
            "alignment": {"mode": self.alignment, "notice": self.alignment_notice, "framing": self.framing.name},
            "blend_steps": BLEND_STEPS,
            "mix": ({"layers": num_layers, "default_start": default_mix_layer_start(num_layers)}
                    if self.pack.generator.layerwise else None),
            "diffusion": {"crop_size": box.size, "center_x": box.left + box.size // 2,
                          "center_y": box.top + box.size // 2, "resolution": self.pack.resolution},
        }

    # -- faces --------------------------------------------------------------------------------------

    def find_faces(self, photo: Image.Image) -> tuple[list[FaceCrop], str | None]:
        """Candidate faces (left to right) and a notice when the centre square stands in for them."""
        if self.alignment == "dlib":
            try:
                with self._detecting:
                    faces = align_faces(photo, self.framing, name="This photo")
            except ImageError as exc:  # no face, or too small to look for one
                return [self.center_crop(photo)], f"{exc}. The centre square of the photo is used instead."
            return [FaceCrop(f.image, tuple(float(v) for v in f.alignment.face.box), f.alignment,
                             f.alignment.face.detector, f.alignment.face.score) for f in faces], None
        return [self.center_crop(photo)], self.alignment_notice

    def center_crop(self, photo: Image.Image) -> FaceCrop:
        side = min(photo.size)
        left, top = (photo.width - side) // 2, (photo.height - side) // 2
        image = pil_to_tensor(resize_square(photo, self.pack.resolution))
        return FaceCrop(image, (left, top, left + side, top + side), None, "center", 0.0)

    def paste(self, photo: Image.Image, face: torch.Tensor, crop: FaceCrop) -> Image.Image:
        """The photo at full size with ``face [3, R, R]`` put where ``crop`` came from."""
        if crop.alignment is not None:
            return paste_back(photo, face, crop.alignment)
        left, top, right, _ = (int(v) for v in crop.box)
        out = photo.copy()
        side = right - left
        out.paste(tensor_to_pil(face).resize((side, side), RESAMPLE), (left, top))
        return out

    # -- inversion and editing ----------------------------------------------------------------------

    def invert(self, face: torch.Tensor, progress: Callable[[int], None] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """In-domain inversion of one face ``[3, R, R]`` → (code ``[1, L, C]``, reconstruction ``[3, R, R]``).

        ``progress(step)`` is called after every step; an exception raised there stops the inversion.
        """
        result = invert(face[None], self.pack, InversionConfig(steps=self.steps),
                        callback=None if progress is None else (lambda b, step, losses: progress(step)))
        return result.codes[:1], result.reconstructions[0].cpu()

    def parse_params(self, data: object) -> EditParams:
        """Checked edit parameters from JSON (ConfigError with a readable message otherwise)."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError("edit parameters must be a JSON object")
        unknown = sorted(set(data) - {"edits", "blend", "mix_start", "faithful", "amounts"})
        if unknown:
            raise ConfigError(f"unknown edit parameters {unknown}; use edits, amounts, blend, mix_start and faithful")
        if not isinstance(data.get("faithful", False), bool):
            raise ConfigError("faithful must be true or false")
        raw_edits = data.get("edits") or {}
        if not isinstance(raw_edits, dict):
            raise ConfigError("edits must map attribute names to distances")
        edits = []
        for name, value in raw_edits.items():
            if name not in self.boundaries:
                known = ", ".join(self.boundaries) or "none"
                raise ConfigError(f"unknown attribute {str(name)[:40]!r}; this model pack has: {known}")
            d = _number(value, f"the distance of {name}")
            if abs(d) > EDIT_LIMIT:
                raise ConfigError(f"the distance of {name} is {d:g}; use -{EDIT_LIMIT:g} to {EDIT_LIMIT:g}")
            if d != 0:
                edits.append((name, d))
        amounts = self._parse_amounts(data.get("amounts") or {}, {name for name, _ in edits})
        blend = _integer(data.get("blend", 0), "blend", 0, BLEND_STEPS)
        mix_start = data.get("mix_start")
        if mix_start is not None:
            self.pack.generator.require_layerwise("style mixing")
            mix_start = _integer(mix_start, "mix_start", 0, self.pack.code_shape[0])
        return EditParams(tuple(edits), blend, mix_start, data.get("faithful", False), amounts)

    def _parse_amounts(self, raw: object, moved: set[str]) -> tuple[tuple[str, float], ...]:
        """``amounts``: attribute → the value to reach, in years (age) or per cent (yes/no attributes)."""
        if not isinstance(raw, dict):
            raise ConfigError("amounts must map attribute names to values in their units (years, per cent)")
        out = []
        for name, value in raw.items():
            if name not in self.units:
                known = ", ".join(self.units) or "none (this pack has no attribute predictor)"
                raise ConfigError(f"{str(name)[:40]!r} has no units to edit in; attributes with units: {known}")
            if name in moved:
                raise ConfigError(f"{name} is given both as a distance (edits) and as an amount (amounts); use one")
            v = _number(value, f"the amount of {name}")
            _, _, low, high = attribute_unit(name)
            low, high = (low, high) if self.units[name] == "years" else PERCENT_RANGE
            if not low <= v <= high:
                unit = "years" if self.units[name] == "years" else "%"
                raise ConfigError(f"the amount of {name} is {v:g}; use {low:g} to {high:g} {unit}")
            out.append((name, v))
        return tuple(out)

    def readings(self, code: torch.Tensor, tuned: TunedWeights | None = None) -> dict[str, float]:
        """What the predictor reads on ``code``'s image (by the tuned generator if given), per attribute with
        units: years, or per cent. The centres of the page's sliders."""
        if not self.units:
            return {}
        image = self.render(code, tuned)[None]
        return {name: round(float(read(image)[0]) * (1 if self.units[name] == "years" else 100), 2)
                for name, read in self.readers.items()}

    def resolve_amounts(self, params: EditParams, code: torch.Tensor, tuned: TunedWeights | None,
                        cache: dict | None = None) -> tuple[EditParams, dict[str, dict]]:
        """``params`` with each amount turned into a distance along its boundary for this face ``[1, L, C]``
        (measured on ``tuned``'s images when given), and per attribute what was found: distance, target,
        reached (in the slider's units), reachable. ``cache`` keeps the searches of one photo."""
        if not params.amounts:
            return params, {}
        if tuned is not None:
            with self._tuned_rendering:
                render = code_renderer(self._tuned_generator, tuned, batch_size=8)
                return self._resolve(params, code, tuned, cache, render)
        return self._resolve(params, code, None, cache, code_renderer(self.pack.generator, None, batch_size=8))

    def _resolve(self, params: EditParams, code: torch.Tensor, tuned: TunedWeights | None, cache: dict | None,
                 render: Callable) -> tuple[EditParams, dict[str, dict]]:
        edits, moves, found = list(params.edits), [], {}
        for name, value in params.amounts:
            scale = 1.0 if self.units[name] == "years" else 100.0
            local = self._local_step(name, code, tuned, cache)
            step = self.steps_of[name].to(code) if local is None else local
            key = (tuned is not None, name, round(value, 3))
            entry = cache.get(key) if cache is not None else None
            if entry is None:
                solved = solve_distances(self.readers[name], render, code, step,
                                         Amount(to=value / scale), attribute=name, bound=SHOWN_BOUND)
                entry = {"distance": round(float(solved.distances[0]), 4), "target": value,
                         "reached": round(float(solved.reached[0]) * scale, 2),
                         "start": round(float(solved.start[0]) * scale, 2), "reachable": bool(solved.reachable[0])}
                if cache is not None:
                    cache[key] = entry
            found[name] = entry
            if entry["distance"] != 0:
                step = self.steps_of[name] if local is None else local
                if step.ndim == 3:  # the pack edits this attribute locally: this face's own step
                    moves.append((name, entry["distance"], step[0]))
                else:
                    edits.append((name, entry["distance"]))
        return EditParams(tuple(edits), params.blend, params.mix_start, params.faithful, moves=tuple(moves)), found

    def _local_step(self, name: str, code: torch.Tensor, tuned: TunedWeights | None, cache: dict | None
                    ) -> torch.Tensor | None:
        """This face's local step ``[1, L, C]`` where the pack edits ``name`` locally (``localized``; measured
        through its tuned generator when given, kept in the photo's ``cache``), else None. Runs inside
        ``resolve_amounts``, which holds the tuned renders' lock when ``tuned`` is given."""
        if self.pack.local_edit(name) is None:
            return None
        key = ("local step", tuned is not None, name)
        if cache is not None and key in cache:
            return cache[key]
        step = self.steps_of[name].to(code)
        # tuned: through the tuned renders' copy of the generator, whose lock resolve_amounts holds
        local = localized(self.pack if tuned is None else self._tuned_pack, name, step, code, tuned)
        if cache is not None:
            cache[key] = local
        return local

    def compose(self, code: torch.Tensor, params: EditParams, second: torch.Tensor | None = None) -> torch.Tensor:
        """Photo 1's code ``[1, L, C]`` moved along each attribute, then interpolated towards and
        style-mixed with photo 2's code ``[1, L, C]`` as ``params`` says."""
        for name, d in params.edits:
            code = manipulate(code, self.boundaries[name], distances=[d])[:, 0]
        for name, d, step in params.moves:
            code = code + d * step.to(code)
        if params.needs_second:
            if second is None:
                raise ConfigError("interpolation and style mixing need a second photo; invert one first")
            if params.blend > 0:
                code = interpolate(code, second, steps=BLEND_STEPS - 1, pairwise=True)[:, params.blend]
            if params.mix_start is not None:
                code = mix(second, code, layer_start=params.mix_start)[0]
        return code

    def render(self, code: torch.Tensor, tuned: TunedWeights | None = None) -> torch.Tensor:
        """G(code) for one code ``[1, L, C]`` → ``[3, R, R]`` on the CPU, by the tuned generator if given."""
        if tuned is None:
            return synthesize(self.pack.generator, code, batch_size=1)[0].cpu()
        with self._tuned_rendering:
            return synthesize_tuned(self._tuned_generator, tuned, code, batch_size=1)[0].cpu()

    def refine(self, face: torch.Tensor, code: torch.Tensor, progress: Callable[[int], None] | None = None
               ) -> tuple[TunedWeights, float]:
        """Pivotal tuning of the generator for one face ``[3, R, R]`` around its code ``[1, L, C]``:
        (its weight deltas, seconds). ``progress(step)`` as for ``invert``."""
        result = refine(face[None], code, self._tuning_pack, pack_refine_config(self.pack, steps=self.refine_steps),
                        callback=None if progress is None else (lambda b, step, losses: progress(step)))
        return result.tuned, result.seconds

    def tuned_for(self, params: EditParams, first: TunedWeights | None, second: TunedWeights | None
                  ) -> TunedWeights | None:
        """The generator of a composed edit: photo 1's tuned one, its weights moved towards photo 2's
        with the interpolation (as ``idinvert interpolate``); style mixing keeps photo 1's (the content)."""
        if not params.faithful:
            return None
        if params.blend == 0:
            return first
        with self._tuned_rendering:  # finding the tunable weights runs a functional_call: on the copy
            return tuned_between(self._tuned_generator, first, second, torch.tensor([params.blend / BLEND_STEPS]))

    def diffuse(self, target: torch.Tensor, context: torch.Tensor, *, crop_size: int, center_x: int,
                center_y: int, progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Semantic diffusion of target's square into context (both ``[3, R, R]``) → (stitched, result)."""
        result = diffuse(target[None], context[None], self.pack, crop_size=crop_size, center_x=center_x,
                         center_y=center_y, steps=self.steps,
                         callback=None if progress is None else (lambda b, step, losses: progress(step)))
        return result.stitched[0, 0].cpu(), result.images[0, 0].cpu()

    def check_crop(self, crop_size: object, center_x: object, center_y: object) -> tuple[int, int, int]:
        values = (_integer(crop_size, "crop_size", 1, self.pack.resolution),
                  _integer(center_x, "center_x", 0, self.pack.resolution),
                  _integer(center_y, "center_y", 0, self.pack.resolution))
        crop_box(self.pack.resolution, crop_size=values[0], center_x=values[1], center_y=values[2])
        return values


def _slider_label(name: str, in_units: bool) -> str:
    """The slider's name for people: "Blond hair"; gender in per cent says of what ("Gender (male)")."""
    return "Gender (male)" if name == "gender" and in_units else plain_name(name)


def _slider_title(name: str, boundary: Boundary, direction: bool) -> str:
    """The slider's tooltip: what moves it and on which layers."""
    layers = "all layers" if boundary.layers is None else "layers " + ",".join(map(str, boundary.layers))
    if not direction:
        return f"{name}: boundary on {layers}"
    method = str(boundary.meta.get("method", "")).replace("sefa", "SeFa").replace("ganspace", "GANSpace")
    return f"{name}: {method + ' ' if method else ''}direction found without labels, on {layers}"


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number; got {str(value)[:40]!r}")
    return float(value)


def _integer(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{what} must be a whole number from {low} to {high}; got {str(value)[:40]!r}")
    return value


__all__ = ["ALIGNMENTS", "BLEND_STEPS", "EditParams", "Editor", "FaceCrop", "decode_photo",
           "encode_npy", "encode_png", "preview_jpeg"]
