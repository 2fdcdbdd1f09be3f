"""Precision–recall curves and average precision (Fig. 3: attributes read off inverted codes).

Both follow scikit-learn's binary conventions exactly, so the numbers can be checked against
``sklearn.metrics.precision_recall_curve`` / ``average_precision_score``:

- scores are sorted in decreasing order and tied scores form one threshold (the order of
  tied samples does not matter);
- at each threshold t, precision = TP/(TP + FP) and recall = TP/P over the samples scoring ≥ t;
- the curve runs from high recall to low and ends at (recall 0, precision 1);
- AP = Σ_k (R_k − R_{k−1})·P_k over thresholds in decreasing order (no interpolation).

A set without positive labels has no defined AP (NaN here; scikit-learn warns and returns an
arbitrary value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PRCurve:
    """A precision–recall curve with its AP; lists from high recall to recall 0."""

    precision: list[float]
    recall: list[float]
    thresholds: list[float]  # one fewer than the points: the final (recall 0, precision 1) has none
    average_precision: float  # NaN without positives
    positives: int
    count: int

    def to_dict(self) -> dict:
        return {"average_precision": self.average_precision, "positives": self.positives, "count": self.count,
                "precision": self.precision, "recall": self.recall}


def _check(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scores, labels = torch.as_tensor(scores).flatten(), torch.as_tensor(labels).flatten()
    if scores.shape != labels.shape or scores.numel() == 0:
        raise ValueError(f"expected as many scores as labels (at least one); got {scores.numel()} and {labels.numel()}")
    if not torch.isfinite(scores.double()).all():
        raise ValueError("scores must be finite")
    labels = labels.double()
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError("labels must be 0 or 1")
    return scores.double().cpu(), labels.cpu()


def binary_counts(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """True and false positives at each distinct score, highest first: ``(tps, fps, thresholds)``."""
    scores, labels = _check(scores, labels)
    order = torch.sort(scores, descending=True, stable=True).indices
    scores, labels = scores[order], labels[order]
    last_of_tie = torch.nonzero(scores[1:] != scores[:-1]).flatten()
    ends = torch.cat([last_of_tie, torch.tensor([scores.numel() - 1])])  # last index of each threshold group
    tps = labels.cumsum(0)[ends]
    fps = (ends + 1).double() - tps
    return tps, fps, scores[ends]


def precision_recall_curve(scores: torch.Tensor, labels: torch.Tensor) -> PRCurve:
    """The precision–recall curve of ``scores [N]`` against binary ``labels [N]`` (1 = positive)."""
    tps, fps, thresholds = binary_counts(scores, labels)
    positives = int(tps[-1])
    precision = tps / (tps + fps)  # tps + fps ≥ 1 at every threshold
    recall = tps / positives if positives else torch.ones_like(tps)
    # From high recall to low, then the conventional end point (recall 0, precision 1).
    precision = torch.cat([precision.flip(0), torch.ones(1, dtype=torch.float64)])
    recall = torch.cat([recall.flip(0), torch.zeros(1, dtype=torch.float64)])
    ap = -float(((recall[1:] - recall[:-1]) * precision[:-1]).sum()) if positives else math.nan
    return PRCurve(precision=precision.tolist(), recall=recall.tolist(), thresholds=thresholds.flip(0).tolist(),
                   average_precision=ap, positives=positives, count=int(tps[-1] + fps[-1]))


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """AP = Σ (R_k − R_{k−1})·P_k (scikit-learn's ``average_precision_score``); NaN without positives.

    >>> average_precision(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
    0.8333333333333333
    """
    return precision_recall_curve(scores, labels).average_precision
