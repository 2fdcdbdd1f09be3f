"""Framing templates: where a face lands in the aligned square crop.

A template gives the eye centres (means of landmarks 36–41 and 42–47, 0-based), the mouth centre
(midpoint of the corners 48 and 54) and optionally the nose tip (30) in the unit square, plus the
output size; a model pack stores its template in ``config.json`` under ``"framing"``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from ..errors import ConfigError

RULES = ("similarity", "ffhq")

Point = tuple[float, float]


@dataclass(frozen=True)
class Framing:
    """Where a face lands in the aligned square crop (unit coordinates, x right, y down)."""

    eye_left: Point  # centre of landmarks 36–41, the eye on the image's left
    eye_right: Point  # centre of landmarks 42–47
    mouth: Point  # midpoint of the mouth corners 48 and 54
    nose: Point | None = None  # nose tip, landmark 30 (optional; joins the fit when given)
    size: int = 256  # side of the aligned crop in pixels
    rule: str = "similarity"  # "similarity": least squares on the points; "ffhq": the FFHQ quad recipe
    name: str = ""  # where the template comes from

    def __post_init__(self) -> None:
        for key in ("eye_left", "eye_right", "mouth", "nose"):
            value = getattr(self, key)
            if value is None and key == "nose":
                continue
            try:
                point = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                point = ()
            if len(point) != 2 or not all(math.isfinite(v) and -1.0 <= v <= 2.0 for v in point):
                raise ConfigError(f"framing {key} must be two numbers in unit coordinates, got {value!r}")
            object.__setattr__(self, key, point)
        if not isinstance(self.size, int) or not 8 <= self.size <= 4096:
            raise ConfigError(f"framing size must be an integer from 8 to 4096, got {self.size!r}")
        if self.rule not in RULES:
            raise ConfigError(f"framing rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if not self.eye_left[0] < self.eye_right[0]:
            raise ConfigError("framing eye_left must lie left of eye_right")

    def with_size(self, size: int) -> "Framing":
        return dataclasses.replace(self, size=size)

    def points(self) -> np.ndarray:
        """``[P, 2]`` eye_left, eye_right, mouth (and nose when given) in crop pixels."""
        points = [self.eye_left, self.eye_right, self.mouth] + ([self.nose] if self.nose is not None else [])
        return np.array(points, dtype=np.float64) * self.size

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rule": self.rule, "size": self.size, "eye_left": list(self.eye_left),
                "eye_right": list(self.eye_right), "mouth": list(self.mouth),
                "nose": None if self.nose is None else list(self.nose)}

    @classmethod
    def from_dict(cls, data: Any, *, what: str = "framing") -> "Framing":
        if not isinstance(data, dict):
            raise ConfigError(f"{what} must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(data) - names), sorted({"eye_left", "eye_right", "mouth"} - set(data))
        if unknown or missing:
            raise ConfigError(f"{what}: unknown fields {unknown}, missing fields {missing}")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{what}: {exc}") from None


# Mean positions that the FFHQ recipe produces on 21,552 UTKFace train faces
# (assets/framing_utkface.json "ffhq_recipe_positions"; the recipe itself, not these points, sets the transform).
_FFHQ_POINTS = {"eye_left": (0.3766, 0.4747), "eye_right": (0.6233, 0.4750), "mouth": (0.5003, 0.7263)}


def ffhq_framing(size: int = 256) -> Framing:
    """The FFHQ alignment recipe (official models: 256)."""
    return Framing(**_FFHQ_POINTS, size=size, rule="ffhq", name="ffhq")


def utkface_framing(size: int = 64) -> Framing:
    """The mean framing of the UTKFace train crops (the default pack's training data, 64 px):
    eyes (0.300, 0.301), (0.687, 0.301), mouth (0.494, 0.694), nose tip (0.492, 0.513)."""
    data = json.loads(resources.files("idinvert").joinpath("assets", "framing_utkface.json").read_text("utf-8"))
    return Framing.from_dict(data["framing"], what="assets/framing_utkface.json").with_size(size)


def framing_from_config(config: dict[str, Any], *, what: str = "config.json") -> Framing | None:
    """The template a model pack stores under ``"framing"`` (``None`` when it has none)."""
    entry = config.get("framing")
    return None if entry is None else Framing.from_dict(entry, what=f"{what} [framing]")
