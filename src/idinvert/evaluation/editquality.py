"""Edit quality along a boundary: does the attribute follow the distance, and what else moves?

For inverted codes z ``[N, L, C]``, a boundary b and distances d_1 < … < d_K (default −3 … 3),
each code is edited (``z + d·b`` on the boundary's layers), synthesised and scored by the
attribute predictor. Per boundary:

- the target attribute's mean score at each distance (logit, or years for age) and its change
  ``s(d_K) − s(d_1)`` in the boundary's direction;
- monotonicity: the Spearman rank correlation between distance and score for each image (then
  averaged), and the fraction of images whose score never moves against the boundary's direction;
- identity similarity (dlib descriptors) and LPIPS (VGG) of each edit to the unedited
  reconstruction G(z), per distance;
- how far the *other* predicted attributes move: the mean absolute change of their probability
  (σ of the logit; years for age) between G(z) and the two extreme edits. Small values mean a
  disentangled edit;
- the change of every predicted attribute per unit distance (``slopes``: the least-squares slope of
  the mean probability, years for age, against d), which for a direction found without labels
  (``idinvert directions``) says what it edits;
- LEC, the latent editing consistency of e4e (Tov et al., 2021): edit by +d, invert the edited image,
  edit the result by −d and measure the distance to the original code,
  ``‖inv(G(z + d·b)) − d·b − z‖`` (Frobenius over the ``[L, C]`` code). An inversion that keeps edits
  in the domain it was trained on returns to z; ``lec_relative`` divides by the edit's own size ‖d·b‖.

Without a predictor (``predictor=None``) or a target output (``output=None``: a direction), the
scores are left out and the other measures remain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..attributes.predictor import AttributePredictor
from ..boundaries import Boundary
from ..engine.editing import manipulate
from ..engine.tuned import synthesize
from ..metrics import lpips_distance
from ..metrics.identity import face_descriptors
from .codes import manipulation_codes


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..K along the last axis, tied values sharing their mean rank (float64)."""
    v = values.double()
    less = (v.unsqueeze(-1) > v.unsqueeze(-2)).sum(-1).double()  # how many are smaller
    equal = (v.unsqueeze(-1) == v.unsqueeze(-2)).sum(-1).double()  # ties, itself included
    return less + (equal + 1) / 2


def spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of ``x [K]`` with each row of ``y [N, K]``: ``[N]`` (NaN if constant).

    >>> spearman(torch.tensor([1., 2., 3.]), torch.tensor([[1., 5., 9.], [3., 2., 1.]]))
    tensor([ 1., -1.], dtype=torch.float64)
    """
    y = torch.as_tensor(y).double()
    if y.ndim == 1:
        y = y[None]
    x = torch.as_tensor(x).double().expand_as(y)
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(-1, keepdim=True), ry - ry.mean(-1, keepdim=True)
    denom = (rx.square().sum(-1) * ry.square().sum(-1)).sqrt()
    return torch.where(denom > 0, (rx * ry).sum(-1) / denom.clamp(min=1e-300), torch.full_like(denom, math.nan))


def monotone_fraction(scores: torch.Tensor, direction: float = 1.0, tolerance: float = 0.0) -> float:
    """Fraction of rows of ``scores [N, K]`` (ordered by distance) that never step against ``direction``.

    A step counts as against when ``direction·(s_{k+1} − s_k) < −tolerance``.

    >>> monotone_fraction(torch.tensor([[0., 1., 2.], [0., 2., 1.]]))
    0.5
    """
    scores = torch.as_tensor(scores).double()
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"expected scores [N, K], got {list(scores.shape)}")
    steps = direction * scores.diff(dim=1)
    return float((steps >= -tolerance).all(dim=1).double().mean())


def attribute_scores(predictor: AttributePredictor, images: torch.Tensor) -> torch.Tensor:
    """Every predictor output per image ``[B, 1 + binary]``: age in years, then the logits."""
    with torch.no_grad():
        logits, age = predictor(images)
    return torch.cat([age[:, None], logits], dim=1).float().cpu()


def to_probability_units(scores: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """Logits → probabilities; age stays in years (``scores [..., O]`` in predictor-output order)."""
    out = scores.clone()
    for i, name in enumerate(names):
        if name != "age":
            out[..., i] = torch.sigmoid(scores[..., i])
    return out


def slopes(distances: Sequence[float], scores: torch.Tensor) -> torch.Tensor:
    """Least-squares slope of each output's mean score against the distance: scores ``[N, K, O]`` → ``[O]``.

    >>> slopes([-1.0, 0.0, 1.0], torch.tensor([[[0.0], [1.0], [2.0]]]))
    tensor([1.], dtype=torch.float64)
    """
    d = torch.as_tensor(list(distances), dtype=torch.float64)
    y = scores.double().mean(dim=0)  # [K, O]
    dc = d - d.mean()
    return (dc[:, None] * (y - y.mean(dim=0))).sum(dim=0) / dc.square().sum()


@dataclass
class EditQuality:
    """The edit-quality measures of one boundary or direction (see the module docstring)."""

    attribute: str  # boundary or direction name
    output: str | None  # the predictor output it should move (None: a direction, or no predictor)
    direction: float  # +1, or −1 when the output runs against the name (beard ↔ No_Beard)
    layers: list[int]
    distances: list[float]
    count: int
    target_mean: list[float] | None = None  # [K] mean target score per distance (logit or years)
    target_change: float = math.nan  # mean direction·(s(d_K) − s(d_1))
    target_slope: float = math.nan  # direction · slopes[output]: probability (years for age) per unit distance
    spearman: float = math.nan  # mean over images of direction·ρ(d, s)
    monotone_fraction: float = math.nan
    identity: list[float] | None = None  # [K] mean cosine similarity to G(z)
    lpips: list[float] | None = None  # [K] mean LPIPS to G(z)
    target_shift: float = math.nan  # |Δ| of the target in probability units (years for age) at the extremes
    others: dict[str, float] = field(default_factory=dict)  # other output → mean |Δ| at the extremes
    slopes: dict[str, float] = field(default_factory=dict)  # every output → change per unit distance
    lec: float | None = None  # mean ‖inv(G(z + d·b)) − d·b − z‖ over the LEC images
    lec_relative: float | None = None  # lec / ‖d·b‖
    lec_distance: float | None = None  # d of the LEC edit
    lec_count: int = 0  # images LEC was measured on

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@torch.no_grad()
def edit_quality(generator, predictor: AttributePredictor | None, codes: torch.Tensor, boundary: Boundary, *,
                 attribute: str, output: str | None, direction: float = 1.0,
                 distances: Sequence[float] = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0), layers: list[int],
                 lpips: bool = True, identity: bool = False, batch_size: int = 16,
                 progress: Callable[[int], None] | None = None) -> EditQuality:
    """Measure one boundary's (or direction's) edits of ``codes [N, L, C]`` (see the module docstring)."""
    distances = sorted(float(d) for d in distances)
    if len(distances) < 2:
        raise ValueError("edit quality needs at least two distances")
    k = len(distances)
    device = next(generator.parameters()).device
    all_scores, ref_scores, id_rows, lp_rows = [], [], [], []
    for chunk in codes.split(max(1, batch_size // k)):  # about batch_size edited images per pass
        chunk = chunk.to(device)
        b = chunk.shape[0]
        reference = generator.synthesize(chunk).clamp(-1, 1)  # [B, 3, R, R]
        edited = generator.synthesize(manipulation_codes(chunk, boundary, distances).flatten(0, 1)).clamp(-1, 1)
        if predictor is not None:
            ref_scores.append(attribute_scores(predictor, reference))
            all_scores.append(attribute_scores(predictor, edited).view(b, k, -1))
        repeated = reference.repeat_interleave(k, dim=0)  # [B·K, 3, R, R], aligned with edited
        if lpips:
            lp_rows.append(lpips_distance(repeated, edited, net="vgg").view(b, k).cpu())
        if identity:
            ref_desc = face_descriptors(reference).repeat_interleave(k, dim=0)
            id_rows.append(F.cosine_similarity(ref_desc, face_descriptors(edited), dim=1).view(b, k).cpu())
        if progress is not None:
            progress(b)
    q = EditQuality(attribute=attribute, output=output, direction=direction, layers=list(layers),
                    distances=distances, count=codes.shape[0],
                    identity=torch.cat(id_rows).mean(dim=0).tolist() if id_rows else None,
                    lpips=torch.cat(lp_rows).mean(dim=0).tolist() if lp_rows else None)
    if predictor is not None:
        _score_edits(q, predictor.names, torch.cat(all_scores), torch.cat(ref_scores))
    return q


def _score_edits(q: EditQuality, names: Sequence[str], scores: torch.Tensor, reference_scores: torch.Tensor) -> None:
    """Fill the predictor's measures of ``q`` from scores ``[N, K, O]`` and of G(z) ``[N, O]``."""
    probs, ref_probs = to_probability_units(scores, names), to_probability_units(reference_scores, names)
    extremes = torch.stack([probs[:, 0], probs[:, -1]], dim=1)  # [N, 2, O]
    shift = (extremes - ref_probs[:, None]).abs().mean(dim=(0, 1))  # [O]
    per_unit = slopes(q.distances, probs)
    q.slopes = {name: float(per_unit[i]) for i, name in enumerate(names)}
    if q.output is None:
        q.others = {name: float(shift[i]) for i, name in enumerate(names)}
        return
    target = names.index(q.output)
    t = scores[:, :, target]  # [N, K]
    rho = spearman(torch.tensor(q.distances), q.direction * t)
    rho = rho[~rho.isnan()]
    q.target_mean = t.mean(dim=0).tolist()
    q.target_change = float((q.direction * (t[:, -1] - t[:, 0])).mean())
    q.target_slope = q.direction * q.slopes[q.output]
    q.spearman = float(rho.mean()) if rho.numel() else math.nan
    q.monotone_fraction = monotone_fraction(t, q.direction)
    q.target_shift = float(shift[target])
    q.others = {name: float(shift[i]) for i, name in enumerate(names) if i != target}


def latent_editing_consistency(generator, codes: torch.Tensor, boundary: Boundary, distance: float,
                               invert: Callable[[torch.Tensor], torch.Tensor], *,
                               batch_size: int = 8) -> tuple[torch.Tensor, float]:
    """LEC per code ``[N]``: ``‖invert(G(z + d·b)) − d·b − z‖`` for codes z ``[N, L, C]``, and ‖d·b‖.

    ``invert`` maps images ``[N, 3, R, R]`` in [-1, 1] to codes ``[N, L, C]`` (the inversion that made
    ``codes``; it runs with gradients enabled, so an optimising inversion works). Edits use the
    boundary's layers, so ‖d·b‖ is taken over those rows.
    """
    if distance == 0:
        raise ValueError("LEC needs a non-zero edit distance")
    codes = codes.detach()
    edited = manipulate(codes, boundary, distances=[distance])[:, 0]  # [N, L, C]
    images = synthesize(generator, edited, batch_size=batch_size).clamp(-1, 1)
    with torch.enable_grad():
        recovered = invert(images).detach().to(codes.device, codes.dtype)
    back = manipulate(recovered, boundary, distances=[-distance])[:, 0]
    step = (edited - codes)[0].norm()  # the same move for every code
    return (back - codes).flatten(1).norm(dim=1).cpu(), float(step)
