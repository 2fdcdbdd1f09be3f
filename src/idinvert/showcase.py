"""What the demo shows of a pack, as library code: which edits, in which amounts, solved and rendered for
the faces, plus an interpolation towards a sample of the model and an animated sweep of one edit.

``plan_edits`` names the edits from the pack's boundaries and its attribute predictor — age 15 years younger
and older than the person's predicted age, smile off and on, glasses on, the other gender, every other
measured attribute to its other side — or raw boundary distances (d = ±1.5, ±3) where nothing measures the
attribute. ``solve_edits`` finds each distance per face with the predictor on what is shown (the tuned
generators' images when tuned); ``render_edits``, ``interpolation_images`` and ``sweep_images`` draw them.
``idinvert demo`` parses, calls these, and writes the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .attributes.amounts import (SHOWN_BOUND, Amount, SolvedAmounts, attribute_reader, code_renderer, edit_steps,
                                 format_value, plain_name, predictor_measures, solve_distances)
from .engine.editing import interpolate
from .engine.tuned import TunedWeights, synthesize_tuned, tuned_between
from .safety import safe_name

STRENGTHS = (-3.0, -1.5, 1.5, 3.0)  # raw distances, for packs without an attribute predictor
AGE_YEARS = 15.0  # the age edits: this many years younger and older than the person's predicted age
ON, OFF = 0.9, 0.1  # probabilities of "smile on", "smile off", "glasses on", the other gender
SWEEP_FRAMES = 13  # frames of the GIF (played forwards, then backwards)


@dataclass
class ShowcaseEdit:
    """One edit the demo shows: an amount in the attribute's units, or a raw distance."""

    key: str  # file-name part: age_plus15y, smile_on, gender_other, age_d+3 …
    attribute: str
    amount: Amount | None = None  # None: the raw distance below
    distance: float = 0.0
    solved: SolvedAmounts | None = None  # per face, once solved
    distances: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # [F]

    def label(self) -> str:
        """The row label, for the face shown (the first): what was asked, and what it reached (plain ASCII:
        the contact sheet's font has no arrows)."""
        name = plain_name(self.attribute)
        if self.solved is None:
            return f"{name} d = {self.distance:+g} (raw distance: no predictor reads {self.attribute})"
        s, unit = self.solved, self.solved.unit
        start, target, reached = float(s.start[0]), float(s.target[0]), float(s.reached[0])
        if self.amount.by is not None:
            text = f"{name} {self.amount.by:+g} y (reached {format_value(reached, unit)}"
        elif self.attribute == "gender":
            text = (f"Other gender ({'male' if target > 0.5 else 'female'} {format_value(start, unit)} to "
                    f"{format_value(reached, unit)}")
        else:
            text = f"{name} {'on' if target > 0.5 else 'off'} (reached {format_value(reached, unit)}"
        text += f"; d = {float(self.distances[0]):+.2f})"
        if not bool(s.reachable[0]):
            text += f", aimed at {format_value(target, unit)}: not reached within |d| <= {s.bound:g}"
        return text


def plan_edits(attributes: list[str], predictor) -> list[ShowcaseEdit]:
    """The demo's edits for the pack's boundaries: age ∓15 years, smile off and on, the other gender,
    glasses and every other measured attribute to the other side; raw ±3 where nothing measures."""
    if predictor is None:  # the whole page in raw distances, as before units: every strength per attribute
        return [ShowcaseEdit(f"{safe_name(name, 'attribute')}_{d:+g}", name, distance=d)
                for name in attributes for d in STRENGTHS]
    order = {"age": 0, "gender": 1, "smile": 2, "eyeglasses": 3}
    edits = []
    for name in sorted(attributes, key=lambda a: (order.get(a, len(order)), a)):
        key = safe_name(name, "attribute")
        if not predictor_measures(predictor, name):
            edits += [ShowcaseEdit(f"{key}_d{d:+g}", name, distance=d) for d in (STRENGTHS[0], STRENGTHS[-1])]
        elif name == "age":
            edits += [ShowcaseEdit(f"age_{word}{AGE_YEARS:g}y", name, Amount(by=sign * AGE_YEARS))
                      for word, sign in (("minus", -1.0), ("plus", 1.0))]
        elif name == "smile":
            edits += [ShowcaseEdit("smile_off", name, Amount(to=OFF)), ShowcaseEdit("smile_on", name, Amount(to=ON))]
        elif name == "eyeglasses":
            edits.append(ShowcaseEdit("eyeglasses_on", name, Amount(to=ON)))
        else:
            edits.append(ShowcaseEdit(f"{key}_other", name, Amount(flip=ON)))
    return edits


def solve_edits(pack, predictor, codes: torch.Tensor, tuned: TunedWeights | None,
                edits: list[ShowcaseEdit]) -> dict[str, torch.Tensor]:
    """Each edit's distance per face (``edit.distances`` ``[F]``), measured on what the page shows (the
    tuned generators' images when tuned); returns each attribute's step: the boundary's ``[L, C]``, or one per
    face ``[F, L, C]`` where the pack edits the attribute locally (``edit_steps``)."""
    render = code_renderer(pack.generator, tuned)
    steps = {a: edit_steps(pack, a, codes, tuned) for a in sorted({e.attribute for e in edits})}
    readers = {}
    for edit in edits:
        if edit.amount is None:
            edit.distances = torch.full((codes.shape[0],), edit.distance)
            continue
        read = readers.setdefault(edit.attribute, attribute_reader(predictor, edit.attribute))
        edit.solved = solve_distances(read, render, codes, steps[edit.attribute], edit.amount,
                                      attribute=edit.attribute, bound=SHOWN_BOUND)
        edit.distances = edit.solved.distances
    return steps


def render_edits(pack, codes: torch.Tensor, tuned: TunedWeights | None, edits: list[ShowcaseEdit],
                 steps: dict[str, torch.Tensor]) -> torch.Tensor:
    """Every edit of every face in one batched rendering: ``[F, E, 3, R, R]`` on the CPU."""
    if not edits:
        return torch.empty(codes.shape[0], 0, 3, pack.resolution, pack.resolution)
    moved = torch.stack([codes + e.distances.to(codes).view(-1, 1, 1) * steps[e.attribute] for e in edits], dim=1)
    return synthesize_tuned(pack.generator, tuned, moved, batch_size=16).cpu()  # codes [F, E, L, C]


def interpolation_images(pack, codes: torch.Tensor, tuned: TunedWeights | None, seed: int) -> torch.Tensor:
    """The first face towards a truncated sample of the model; a tuned generator fades to the pack's."""
    g = pack.generator
    z = torch.randn(1, g.z_dim, generator=torch.Generator().manual_seed(seed)).to(pack.device)
    with torch.no_grad():
        other = g.sample_codes(z, truncation_psi=0.7)  # a typical generated face (truncated towards the mean)
    path = interpolate(codes[:1], other, steps=len(STRENGTHS) - 2)[0, 0]  # [4, L, C]
    weights = torch.linspace(0, 1, len(path))
    between = tuned_between(g, tuned.select([0]) if tuned is not None else None, None, weights)
    return synthesize_tuned(g, between, path[:, None])[:, 0].cpu() if between is not None \
        else synthesize_tuned(g, None, path).cpu()


def sweep_images(pack, codes: torch.Tensor, tuned: TunedWeights | None, edits: list[ShowcaseEdit],
                 steps: dict[str, torch.Tensor]) -> tuple[str | None, torch.Tensor | None]:
    """Frames of the first face along one edit: from age −15 to +15 years when measured, else from d = −3
    to +3 along the first boundary (age when the pack has it)."""
    if not edits:
        return None, None
    ends = [e for e in edits if e.attribute == "age" and e.amount is not None]
    if len(ends) == 2:
        attribute, lo, hi = "age", float(ends[0].distances[0]), float(ends[1].distances[0])
        name = f"age from {ends[0].amount.by:+g} to {ends[1].amount.by:+g} years (d {lo:+.2f} to {hi:+.2f})"
    else:
        attribute = "age" if any(e.attribute == "age" for e in edits) else edits[0].attribute
        lo, hi = STRENGTHS[0], STRENGTHS[-1]
        name = f"{safe_name(attribute, 'attribute')} from {lo:+g} to {hi:+g}"
    distances = torch.linspace(lo, hi, SWEEP_FRAMES).to(codes)
    step = steps[attribute] if steps[attribute].ndim == 2 else steps[attribute][0]  # the first face's
    frames = codes[:1, None] + distances.view(1, -1, 1, 1) * step  # [1, K, L, C]
    return name, synthesize_tuned(pack.generator, tuned.select([0]) if tuned is not None else None, frames,
                                  batch_size=16)[0].cpu()
