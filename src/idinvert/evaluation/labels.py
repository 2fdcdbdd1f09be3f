"""Binary attribute labels of the evaluation images, from label rows or from the predictor.

Label rows are dicts of strings, as ``prepare-data --labels`` stores them in ``index.json`` or
as a labels CSV holds them (one row per image). The conventions of the attribute training apply
(``attributes.train.dataset_targets``): CelebA columns are 0/1 (−1/1 is read as 0/1 too);
UTKFace's ``gender`` (0 male, 1 female) gives ``Male = 1 − gender``; ``age`` is in years. An
empty or unparsable cell is unknown (NaN).

Fig. 3 classifies *binary* attributes, so age becomes "at least the median age of the set";
the threshold is reported with the results.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch


def _number(text) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except (TypeError, ValueError):
        return math.nan


def labels_from_rows(rows: Sequence[dict], names: Iterable[str]) -> dict[str, torch.Tensor]:
    """``name → [N]`` float64 values (NaN = unknown) for each name that at least one row has."""
    out = {}
    for name in names:
        values = []
        for row in rows:
            v = _number(row.get(name))
            if name == "Male" and math.isnan(v):
                v = 1.0 - _number(row.get("gender"))
            if name != "age" and v == -1.0:  # CelebA's list_attr_celeba.txt writes −1 for "no"
                v = 0.0
            values.append(v)
        tensor = torch.tensor(values, dtype=torch.float64)
        if len(values) and not torch.isnan(tensor).all():
            out[name] = tensor
    return out


def binarize(name: str, values: torch.Tensor) -> tuple[torch.Tensor, float | None]:
    """Known values as 0/1 labels (age: ≥ the median of the known ages) and the threshold used.

    Returns ``(labels [N] with NaN kept for unknowns, threshold or None)``.
    """
    values = values.double()
    if name != "age":
        return torch.where(torch.isnan(values), values, (values >= 0.5).double()), None
    known = values[~torch.isnan(values)]
    if known.numel() == 0:
        return values, None
    threshold = float(known.median())
    return torch.where(torch.isnan(values), values, (values >= threshold).double()), threshold


def predictor_labels(name: str, scores: torch.Tensor) -> tuple[torch.Tensor, float | None]:
    """Labels from the predictor's scores ``[N]`` on the real photos: logit > 0, or age ≥ its median."""
    scores = scores.double()
    if name == "age":
        threshold = float(scores.median())
        return (scores >= threshold).double(), threshold
    return (scores > 0).double(), None
