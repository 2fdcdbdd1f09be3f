"""What every reader of foreign weight files shares: safe loading of a state_dict and strict copying.

``read_state_dict`` uses ``torch.load(weights_only=True)``, which rebuilds tensors and plain
containers only and never runs code from the file. ``load_strict`` copies a state_dict into a
module only when every key and shape matches, and names what does not.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first line (its type's name when it has no message), for one-line errors."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a ``.pth`` state_dict safely; a clear error for missing or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or corrupt files
        raise CheckpointError(f"{path}: not a readable PyTorch weight file ({first_line(exc)})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
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
