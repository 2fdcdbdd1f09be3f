"""Attribute predictors and semantic boundaries, and where a model pack keeps them.

``config.json`` of a pack may hold::

    "predictor": {"file": "attributes.safetensors", "config": {...}, "report": {...}},
    "boundaries": {"smile": "boundaries/smile.npy", ...}

Boundary files are in the official dict format (``boundary [1, L, C]`` with unit rows and
``meta_data.manipulate_layers``); ``idinvert edit --attribute NAME`` looks them up by name.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_path
from ..formats.common import load_strict
from ..networks.config import from_dict
from .calibration import check_calibration
from .predictor import EDIT_NAMES, AttributePredictor, PredictorConfig

PREDICTOR_FILE = "attributes.safetensors"


def predictor_config_from_dict(data: dict) -> PredictorConfig:
    data = dict(data)
    data["binary"] = tuple(data.get("binary", ()))
    data["channels"] = tuple(data.get("channels", PredictorConfig().channels))
    if data.get("input_crop") is not None:
        data["input_crop"] = tuple(data["input_crop"])
    return from_dict(PredictorConfig, data, what="predictor config")


def load_predictor(pack) -> AttributePredictor:
    """The pack's attribute predictor, in eval mode on the pack's device."""
    entry = pack.config.get("predictor")
    if not entry:
        raise CheckpointError(f"pack {pack.name!r} has no attribute predictor; train one with "
                              f"`idinvert train-predictor --pack ...`")
    model = AttributePredictor(predictor_config_from_dict(entry["config"]))
    path = pack.file(entry.get("file", PREDICTOR_FILE))
    load_strict(model, load_file(str(path)), str(path))
    model.calibration = check_calibration(entry.get("calibration"), model.names,
                                          what=f"pack {pack.name!r}: predictor calibration")
    return model.to(pack.device).eval()


def save_predictor(model: AttributePredictor, path: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def predictor_entry(model: AttributePredictor, report: dict | None = None) -> dict:
    c = model.config
    config = {"resolution": c.resolution, "binary": list(c.binary), "channels": list(c.channels)}
    if c.input_crop is not None:
        config["input_crop"] = list(c.input_crop)
    entry = {"file": PREDICTOR_FILE, "config": config, "report": report or {}}
    if model.calibration:
        entry["calibration"] = {name: list(pair) for name, pair in model.calibration.items()}
    return entry


def predictor_output(name: str, predictor: AttributePredictor) -> str:
    """The predictor output behind a user-facing attribute name (``smile`` → ``Smiling``)."""
    output = EDIT_NAMES.get(name, name)
    if output not in predictor.names:
        known = ", ".join(sorted(set(EDIT_NAMES) | set(predictor.names)))
        raise ConfigError(f"unknown attribute {name!r}; the predictor knows: {known}")
    return output


def pack_boundaries(pack) -> dict[str, str]:
    """Attribute name → boundary file, relative to the pack folder (``ModelPack.boundary_files``)."""
    return pack.boundary_files()


def boundary_sign(name: str) -> float:
    """+1, or −1 where the predictor output runs against the name (``beard`` = not ``No_Beard``)."""
    return -1.0 if name == "beard" else 1.0


__all__ = ["AttributePredictor", "PredictorConfig", "EDIT_NAMES", "load_predictor", "save_predictor",
           "predictor_entry", "predictor_output", "pack_boundaries", "boundary_sign"]
