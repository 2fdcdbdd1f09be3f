"""Calibrating a pack's attribute predictor to the photos it reads in that pack's framing.

A predictor reused in another framing (``input_crop``: dcgan-faces64 reads a 36 px face resampled to 64 px)
is sharp in *ranking* faces but not in its *scale*: of the CelebA ``val`` photos labelled smiling, the
median read a smile probability of 0.55 and 5 % read 0.9 or more, so "smile on, 0.9" asked more of an edit
than nearly any real smile shows. Calibration maps each output through one affine map fitted on labelled photos that no network here
trained on, aligned to the pack's framing:

* a yes/no attribute: ``logit' = a·logit + b`` (Platt scaling: a one-feature logistic regression of the
  label on the logit), so that a reading of 0.9 means "nine in ten photos reading this have it";
* age: ``years' = a·years + b`` (least squares of the labelled age on the reading).

The pack keeps the pairs in ``config.json`` under ``predictor.calibration`` (``{"Smiling": [a, b], ...}``);
``load_predictor`` checks and attaches them and ``AttributePredictor.reading`` applies them. Raw ``score``
(what boundaries are trained from) is left as it is.
"""

from __future__ import annotations

import math

import torch

from ..errors import CheckpointError

MAX_SCALE = 20.0  # a calibration steeper than this (or not positive) is refused as crafted or broken
MAX_SHIFT = 200.0  # |b| in logits or years
MIN_PER_CLASS = 10  # labelled photos per class (yes and no) needed to fit a yes/no attribute


def check_calibration(entry, names: tuple[str, ...], *, what: str = "predictor calibration"
                      ) -> dict[str, tuple[float, float]]:
    """``{"name": [a, b]}`` from a pack's config, checked: known outputs, finite, 0 < a ≤ MAX_SCALE."""
    if entry is None:
        return {}
    if not isinstance(entry, dict):
        raise CheckpointError(f"{what} must be a JSON object of name: [scale, shift], got {type(entry).__name__}")
    out = {}
    for name, pair in entry.items():
        if name not in names:
            raise CheckpointError(f"{what} names {name!r}, which the predictor does not output")
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)):
            raise CheckpointError(f"{what} of {name!r} must be [scale, shift], got {pair!r}")
        a, b = float(pair[0]), float(pair[1])
        if not (math.isfinite(a) and math.isfinite(b) and 0 < a <= MAX_SCALE and abs(b) <= MAX_SHIFT):
            raise CheckpointError(f"{what} of {name!r} is out of range: scale {a:g} (0…{MAX_SCALE:g}), "
                                  f"shift {b:g} (|b| ≤ {MAX_SHIFT:g})")
        out[name] = (a, b)
    return out


def fit_platt(logits: torch.Tensor, labels: torch.Tensor, *, iterations: int = 50) -> tuple[float, float]:
    """(a, b) maximising the likelihood of ``labels`` (0/1) under ``sigmoid(a·logit + b)`` (Newton's method
    in float64, a tiny ridge keeps it finite when the classes separate)."""
    x = logits.detach().double().flatten()
    y = labels.detach().double().flatten()
    if x.shape != y.shape or not torch.isfinite(x).all():
        raise ValueError("logits and labels must be finite and of one length")
    if int((y == 1).sum()) < MIN_PER_CLASS or int((y == 0).sum()) < MIN_PER_CLASS:
        raise ValueError(f"need at least {MIN_PER_CLASS} labelled photos of each class")
    features = torch.stack([x, torch.ones_like(x)], dim=1)  # [N, 2]
    theta = torch.tensor([1.0, 0.0], dtype=torch.float64)
    ridge = 1e-6 * torch.eye(2, dtype=torch.float64)
    for _ in range(iterations):
        p = torch.sigmoid(features @ theta)
        gradient = features.T @ (p - y)
        hessian = features.T @ (features * (p * (1 - p))[:, None]) + ridge
        update = torch.linalg.solve(hessian, gradient)
        theta = theta - update
        if float(update.abs().max()) < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def fit_linear(readings: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """(a, b) of the least-squares line ``truth ≈ a·reading + b``."""
    x = readings.detach().double().flatten()
    y = truth.detach().double().flatten()
    if x.shape != y.shape or len(x) < 3 or not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("readings and labels must be finite, of one length, at least 3")
    xc = x - x.mean()
    a = float((xc * (y - y.mean())).sum() / (xc * xc).sum())
    return a, float(y.mean() - a * x.mean())


def log_loss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(torch.nn.functional.binary_cross_entropy_with_logits(logits.double(), labels.double()))
