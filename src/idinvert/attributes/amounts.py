"""Edit amounts in the attribute's own units: years of age, or the predictor's probability.

A boundary edit moves a code by a distance d along a direction, ``z' = z + d·n``; how much a given d
changes the face differs from face to face (and more after pivotal tuning, whose generator holds on to
the person). Here the amount is asked in the attribute's units instead — "15 years older", "smiling with
probability 0.9" — and d is found for each image so that the pack's attribute predictor reads that
value on the edited image::

    read(render(z + d·n)) = target,   |d| ≤ bound

by bracketing outward from d = 0 and bisecting inside the bracket. ``read`` is monotone along a trained
boundary in practice but not by construction: the first crossing from d = 0 is taken. Where the target
cannot be reached within the bound, the image keeps the distance that came closest and carries a note
(never a silent clamp); a NaN target or an attribute without a predictor output is a one-line error.

The front ends share the rest: ``check_amount`` (the command line's rule: ``--by`` in years for age,
``--to`` a probability for yes/no attributes), ``boundary_step`` (a boundary as the ``[L, C]`` step that
``manipulate`` takes at d = 1), ``edit_steps`` (that step, or per image the pack's local version of it:
a smile that moves the mouth and keeps the rest of the face), ``code_renderer`` (what the images look like, through tuned generators
when there are some), and ``plain_name`` / ``format_value`` for labels ("Blond hair", "47 y", "88 %").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..boundaries import Boundary, load_boundary
from ..engine.editing import local_steps, manipulate, outside_ellipse
from ..engine.tuned import TunedWeights, synthesize, synthesize_tuned
from ..errors import ConfigError, NonFiniteError
from ..networks import CodeGenerator
from .predictor import EDIT_NAMES, AttributePredictor

DEFAULT_BOUND = 6.0  # largest |d|: twice the official ±3 range of boundary edits
# largest |d| for pictures shown at once (the demo, the editor's sliders): further out the 64 px packs' faces
# break up (dcgan-faces64's tuned generator at d = 6 along eyeglasses), so a target beyond it is shown this
# far and labelled as not reached
SHOWN_BOUND = 4.5
BRACKETS = (0.125, 0.25, 0.5, 0.75, 1.0)  # fractions of the bound tried outward from d = 0
BISECTIONS = 12  # halvings of the bracket (its width ends below bound / 2**12 · 0.25)
#: attribute → (unit name, tolerance in that unit, smallest value, largest value)
AGE_UNIT = ("years", 0.5, 0.0, 120.0)
PROBABILITY_UNIT = ("probability", 0.01, 0.0, 1.0)
#: user-facing attributes whose predictor output runs against the name (beard = not No_Beard)
INVERTED = {"beard"}
FLIP_TARGET = 0.9  # "the other side" of a yes/no attribute: probability 0.9, or 0.1 from above 0.5
#: names for people, not programs (others: underscores to spaces, first letter capital)
PLAIN_NAMES = {"age": "Age", "gender": "Gender", "smile": "Smile", "eyeglasses": "Glasses",
               "mouth_open": "Mouth open", "Mouth_Slightly_Open": "Mouth open", "Male": "Gender",
               "Smiling": "Smile", "No_Beard": "No beard"}


@dataclass(frozen=True)
class Amount:
    """How far to edit: ``by`` (a change) or ``to`` (a value), in the attribute's units, or ``flip``
    (a yes/no attribute to the other side of 0.5: to ``flip`` from below, to ``1 − flip`` from above)."""

    by: float | None = None  # change: years for age, probability points (−1…1) for yes/no attributes
    to: float | None = None  # value to reach: years for age, probability (0…1) for yes/no attributes
    flip: float | None = None  # probability (0.5…1) to reach on the other side of 0.5, per image

    def __post_init__(self) -> None:
        given = [v for v in (self.by, self.to, self.flip) if v is not None]
        if len(given) != 1:
            raise ConfigError("give an edit amount either as a change (by) or as a value to reach (to), not both")
        if isinstance(given[0], bool) or not isinstance(given[0], (int, float)) or not math.isfinite(given[0]):
            raise ConfigError(f"the edit amount must be a finite number, got {given[0]}")
        if self.flip is not None and not 0.5 < self.flip < 1:
            raise ConfigError(f"the probability on the other side must lie between 0.5 and 1, got {self.flip:g}")

    def describe(self, unit: str) -> str:
        if self.by is not None:
            return f"by {self.by:+g} {unit}"
        if self.flip is not None:
            return f"to the other side ({self.flip:g} or {1 - self.flip:g} {unit})"
        return f"to {self.to:g} {unit}"


@dataclass
class SolvedAmounts:
    """Per image: the distance found and what the predictor reads before and after."""

    attribute: str
    unit: str
    distances: torch.Tensor  # [N] d along the boundary
    start: torch.Tensor  # [N] the predictor's value on the unedited image
    target: torch.Tensor  # [N] the value asked for
    reached: torch.Tensor  # [N] the predictor's value on the edited image
    reachable: torch.Tensor  # [N] bool: the target lies within the bound (found by bisection)
    bound: float
    notes: list[str | None] = field(default_factory=list)  # per image, None when the target was reached

    def report(self) -> list[dict]:
        """JSON-ready rows, one per image (for manifests)."""
        return [{"attribute": self.attribute, "unit": self.unit, "distance": round(float(d), 4),
                 "start": round(float(s), 4), "target": round(float(t), 4), "reached": round(float(r), 4),
                 "reachable": bool(ok), **({"note": note} if note else {})}
                for d, s, t, r, ok, note in zip(self.distances, self.start, self.target, self.reached,
                                                self.reachable, self.notes)]


def attribute_unit(attribute: str) -> tuple[str, float, float, float]:
    """(unit, tolerance, lowest, highest) of an attribute's values."""
    return AGE_UNIT if attribute == "age" else PROBABILITY_UNIT


def plain_name(attribute: str) -> str:
    """The attribute as people write it: ``blond_hair`` and ``Blond_Hair`` → "Blond hair"."""
    if attribute in PLAIN_NAMES:
        return PLAIN_NAMES[attribute]
    text = " ".join(attribute.replace("_", " ").split())
    return text[:1].upper() + text[1:].lower() if text else attribute


def format_value(value: float, unit: str) -> str:
    """A value in its unit, short: ``47 y``, ``88 %``."""
    if unit == "years":
        return f"{value:.0f} y"
    return f"{100 * value:.0f} %"


def predictor_measures(predictor: AttributePredictor | None, attribute: str) -> bool:
    """Whether ``predictor`` reads ``attribute`` (so that its edits can be asked in units)."""
    return predictor is not None and EDIT_NAMES.get(attribute, attribute) in predictor.names


def check_amount(amount: Amount, attribute: str) -> None:
    """The command line's rule for units, checked before any work: a change (``--by``) in years for age,
    a probability to reach (``--to``, strictly between 0 and 1) for yes/no attributes."""
    if attribute == "age" and amount.by is None:
        raise ConfigError("age is edited by a change in years: use --by YEARS (like --by +15); --to is the "
                          "probability of a yes/no attribute")
    if attribute != "age" and amount.by is not None:
        raise ConfigError(f"--by is a change in years, and only age is measured in years; for {attribute} use "
                          f"--to P, the probability to reach (between 0 and 1, like --to 0.9)")
    if amount.to is not None and not 0 < amount.to < 1:
        raise ConfigError(f"--to {amount.to:g} is outside what {attribute} can read: use a probability "
                          f"between 0 and 1, like 0.9")
    if amount.by is not None:
        _, _, low, high = attribute_unit(attribute)
        if abs(amount.by) > high - low:
            raise ConfigError(f"--by {amount.by:+g} is more than {attribute} can change ({high - low:g} years)")


def boundary_step(boundary: Boundary, code_shape: tuple[int, int], layers=None) -> torch.Tensor:
    """The code change ``[L, C]`` of an edit by d = 1 along ``boundary`` (zero on the layers it leaves;
    ``layers`` as for ``manipulate``), so that ``codes + d·step`` is ``manipulate``'s edit."""
    return manipulate(torch.zeros(1, *code_shape), boundary, distances=[1.0], layers=layers)[0, 0]


def pack_step(pack, attribute: str) -> torch.Tensor:
    """The pack's boundary for ``attribute`` as its step ``[L, C]`` (``boundary_step``)."""
    return boundary_step(load_boundary(pack.boundary_file(attribute), pack.code_shape), pack.code_shape)


def edit_steps(pack, attribute: str, codes: torch.Tensor, tuned: TunedWeights | None = None, *,
               local: bool = True) -> torch.Tensor:
    """The step along which an edit of ``attribute`` in its units moves ``codes`` ``[N, L, C]``: the pack's
    boundary step ``[L, C]``, or its local version (``localized``)."""
    step = pack_step(pack, attribute).to(codes)
    return localized(pack, attribute, step, codes, tuned) if local else step


def localized(pack, attribute: str, step: torch.Tensor, codes: torch.Tensor,
              tuned: TunedWeights | None = None) -> torch.Tensor:
    """``step`` ``[L, C]`` as it is, or — where the pack's ``local_edits`` names ``attribute`` — one step per
    image ``[N, L, C]`` that keeps the face outside the pack's region (a smile moves the mouth, not the
    eyes and the face's shape; ``engine.editing.local_steps``, measured through image i's tuned generator
    when ``tuned`` is given)."""
    settings = pack.local_edit(attribute)
    if settings is None:
        return step
    keep = outside_ellipse(pack.resolution, settings["center"], settings["radii"])
    return local_steps(pack.generator, codes, step, keep, tuned=tuned, stiffness=settings["stiffness"])


def code_renderer(generator: CodeGenerator, tuned: TunedWeights | None = None, *, batch_size: int = 16
                  ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``render(codes [k, L, C], rows [k]) → images [k, 3, R, R]`` on the CPU for ``solve_distances``:
    row j through image ``rows[j]``'s tuned generator, or all through ``generator`` without ``tuned``."""
    if tuned is None:
        return lambda codes, rows: synthesize(generator, codes, batch_size=batch_size).cpu()
    return lambda codes, rows: synthesize_tuned(generator, tuned.select(rows.tolist()), codes[:, None],
                                                batch_size=batch_size)[:, 0].cpu()


def attribute_reader(predictor: AttributePredictor, attribute: str, *, calibrated: bool = True
                     ) -> Callable[[torch.Tensor], torch.Tensor]:
    """images ``[N, 3, R, R]`` → the attribute in its units ``[N]``: age in years, or the probability of a
    yes/no attribute (for ``beard``: 1 − P(No_Beard)), through the pack's calibration of the predictor where
    it has one (``attributes.calibration``; ``calibrated=False``: the raw reading, for comparisons). Unknown
    names are a one-line ConfigError."""
    output = EDIT_NAMES.get(attribute, attribute)
    if output not in predictor.names:
        known = ", ".join(sorted(set(EDIT_NAMES) | set(predictor.names)))
        raise ConfigError(f"the pack's attribute predictor has no {attribute!r} to measure an edit amount with; "
                          f"it knows: {known}")
    flip = attribute in INVERTED

    @torch.no_grad()
    def read(images: torch.Tensor) -> torch.Tensor:
        device = next(predictor.parameters()).device
        images = images.to(device)
        value = (predictor.reading(images, output) if calibrated else predictor.score(images, output)).float().cpu()
        if output == "age":
            return value
        p = torch.sigmoid(value)
        return 1.0 - p if flip else p

    return read


def targets_for(amount: Amount, start: torch.Tensor, attribute: str) -> torch.Tensor:
    """The value to reach for each image ``[N]``, refused in one line when outside the unit's range."""
    unit, _, low, high = attribute_unit(attribute)
    if amount.flip is not None:
        if unit != "probability":
            raise ConfigError(f"{attribute} has no other side: it is measured in {unit}")
        return torch.where(start < 0.5, float(amount.flip), 1.0 - float(amount.flip)).to(start)
    if amount.to is not None:
        if not low <= amount.to <= high:
            raise ConfigError(f"--to {amount.to:g} is outside what {attribute} can read ({low:g}…{high:g} {unit})")
        return torch.full_like(start, float(amount.to))
    span = high - low
    if not -span <= amount.by <= span:
        raise ConfigError(f"--by {amount.by:+g} is more than {attribute} can change ({span:g} {unit})")
    return start + float(amount.by)


@torch.no_grad()
def solve_distances(read: Callable[[torch.Tensor], torch.Tensor],
                    render: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], codes: torch.Tensor,
                    direction: torch.Tensor, amount: Amount, *, attribute: str, bound: float = DEFAULT_BOUND,
                    bisections: int = BISECTIONS) -> SolvedAmounts:
    """Distances ``[N]`` along ``direction`` so that ``read(render(codes + d·direction))`` meets ``amount``.

    codes ``[N, L, C]``; direction ``[L, C]`` or one per image ``[N, L, C]`` (the boundary on the layers it
    moves, zero elsewhere, pointing to more of the attribute; ``boundary_step``); ``render(codes_k, rows)``
    maps the codes of images ``rows`` (indices ``[k]``)
    to images — row j through image ``rows[j]``'s generator when the generators are tuned; ``read`` maps
    images to values in the attribute's units. Only the images still searching are rendered at each try.
    """
    if not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound > 0):
        raise ConfigError(f"the largest edit distance must be a positive number, got {bound}")
    unit, tolerance, _, _ = attribute_unit(attribute)
    n = codes.shape[0]
    direction = direction.to(codes)
    if direction.shape not in (codes.shape[1:], codes.shape):
        raise ValueError(f"direction {list(direction.shape)} fits neither [L, C] nor [N, L, C] of codes "
                         f"{list(codes.shape)}")
    per_image = direction.ndim == 3

    def value_at(d: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """The attribute at ``codes + d·direction`` for the active images (NaN for the others)."""
        out = torch.full((n,), math.nan)
        rows = active.nonzero().flatten()
        if len(rows):
            step = direction[rows.to(direction.device)] if per_image else direction
            values = read(render(codes[rows] + d[rows].to(codes).view(-1, 1, 1) * step, rows)).cpu().float()
            if not torch.isfinite(values).all():
                raise NonFiniteError(f"the attribute predictor read NaN/inf for {attribute}; check the pack")
            out[rows] = values
        return out

    zero = torch.zeros(n)
    start = value_at(zero, torch.ones(n, dtype=torch.bool))
    target = targets_for(amount, start, attribute)
    sign = torch.where(target >= start, 1.0, -1.0)  # which way along the direction
    done = (target - start).abs() <= tolerance
    low, low_value = zero.clone(), start.clone()  # the inner end of the bracket: not there yet
    high, high_value = zero.clone(), start.clone()  # the outer end: at or past the target
    best, best_value = zero.clone(), start.clone()  # closest seen, for images that never get there
    bracketed = done.clone()
    for fraction in BRACKETS:
        if bracketed.all():
            break
        d = sign * bound * fraction
        values = value_at(d, ~bracketed)
        crossed = ~bracketed & ((values - target) * sign >= 0)
        still = ~bracketed & ~crossed
        high, high_value = torch.where(crossed, d, high), torch.where(crossed, values, high_value)
        low, low_value = torch.where(still, d, low), torch.where(still, values, low_value)
        closer = still & ((values - target).abs() < (best_value - target).abs())
        best, best_value = torch.where(closer, d, best), torch.where(closer, values, best_value)
        bracketed = bracketed | crossed
    search = bracketed & ~done
    for _ in range(bisections):
        close = torch.minimum((low_value - target).abs(), (high_value - target).abs()) <= tolerance
        active = search & ~close
        if not active.any():
            break
        mid = (low + high) / 2
        values = value_at(mid, active)
        over = active & ((values - target) * sign >= 0)
        under = active & ~over
        high, high_value = torch.where(over, mid, high), torch.where(over, values, high_value)
        low, low_value = torch.where(under, mid, low), torch.where(under, values, low_value)
    use_low = (low_value - target).abs() < (high_value - target).abs()  # the bracket's end nearer the target
    found, found_value = torch.where(use_low, low, high), torch.where(use_low, low_value, high_value)
    distances = torch.where(done, zero, torch.where(search, found, best))
    reached = torch.where(done, start, torch.where(search, found_value, best_value))
    reachable = done | search
    notes = []
    for i in range(n):
        if reachable[i]:
            notes.append(None)
        else:
            notes.append(f"{attribute} {amount.describe(unit)} is not reached within |d| = {bound:g}: the closest "
                         f"reading is {float(reached[i]):.3g} {unit} at d = {float(distances[i]):+.3g} "
                         f"(from {float(start[i]):.3g}, target {float(target[i]):.3g})")
    return SolvedAmounts(attribute=attribute, unit=unit, distances=distances, start=start, target=target,
                         reached=reached, reachable=reachable, bound=float(bound), notes=notes)
