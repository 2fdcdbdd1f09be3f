"""InterFaceGAN boundaries in W+: one linear SVM per layer, then a layer-wise search.

1. Sample codes ``w = mapping(z)`` (optionally truncated), synthesise, score each image with
   the attribute predictor (a logit, or age in years).
2. Keep the confident extremes: the ``keep_fraction`` highest scores as positives and the
   lowest as negatives.
3. For every layer l, fit a linear SVM on the l-th rows of the kept codes (70 % train, 30 %
   validation) and keep its unit normal as ``boundary[0, l]`` (rows normalised one by one,
   as the official files).
4. Layer-wise search: on fresh samples, move one layer at a time by ±``search_distance``
   along its row and measure the predictor's change; the layers whose effect reaches
   ``layer_threshold`` of the largest are the ``manipulate_layers``.
Conditional boundaries project another attribute's rows out of each row first.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..errors import ConfigError
from ..networks import CodeGenerator
from .predictor import AttributePredictor


@dataclass(frozen=True)
class BoundaryConfig:
    samples: int = 20000  # codes sampled (≈20k suffice, idinvert#5)
    keep_fraction: float = 0.1  # positives and negatives each (InterFaceGAN uses 0.02 of 500k)
    truncation_psi: float = 1.0  # 1 = raw codes, as inverted real photos are
    svm_c: float = 1.0  # LinearSVC regularisation
    train_fraction: float = 0.7
    search_samples: int = 256
    search_distance: float = 3.0
    layer_threshold: float = 0.35  # keep layers whose effect ≥ this × the largest
    batch: int = 128
    seed: int = 0


@dataclass
class BoundaryResult:
    attribute: str
    boundary: np.ndarray  # [1, L, C] float32, unit rows
    manipulate_layers: list[int]
    layer_effects: list[float]  # mean score change per layer for ±search_distance
    svm_accuracy: list[float]  # validation accuracy per layer
    samples: int
    score_range: tuple[float, float]  # thresholds of the kept negatives / positives
    conditions: list[str] = field(default_factory=list)

    def meta_data(self) -> dict:
        return {"manipulate_layers": [int(x) for x in self.manipulate_layers], "attribute": self.attribute,
                "layer_effects": [round(float(x), 5) for x in self.layer_effects],
                "svm_accuracy": [round(float(x), 4) for x in self.svm_accuracy], "samples": int(self.samples),
                "conditions": list(self.conditions)}


@torch.no_grad()
def score_codes(generator: CodeGenerator, predictor: AttributePredictor, codes: torch.Tensor,
                attribute: str, batch: int = 128) -> torch.Tensor:
    """The predictor's score of ``G(codes)`` for one attribute: ``[N]``."""
    out = []
    for chunk in codes.split(batch):
        out.append(predictor.score(generator.synthesize(chunk), attribute).float().cpu())
    return torch.cat(out)


def sample_codes(generator: CodeGenerator, n: int, *, psi: float, seed: int) -> torch.Tensor:
    z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return torch.cat([generator.sample_codes(c.to(generator.device), truncation_psi=psi)
                          for c in z.split(1024)])


def fit_layer_svms(codes: np.ndarray, labels: np.ndarray, *, c: float, train_fraction: float,
                   seed: int) -> tuple[np.ndarray, list[float]]:
    """Unit normals ``[L, C]`` of per-layer linear SVMs, and their validation accuracies."""
    from sklearn.svm import LinearSVC  # here: scikit-learn takes seconds to import, and only train-boundary uses it

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    cut = int(len(order) * train_fraction)
    train, val = order[:cut], order[cut:]
    normals, accuracy = [], []
    for layer in range(codes.shape[1]):
        x = codes[:, layer]
        svm = LinearSVC(C=c, max_iter=20000, dual="auto")
        svm.fit(x[train], labels[train])
        accuracy.append(float(svm.score(x[val], labels[val])) if len(val) else float("nan"))
        w = svm.coef_.reshape(-1).astype(np.float64)
        normals.append(w / max(np.linalg.norm(w), 1e-12))
    return np.stack(normals).astype(np.float32), accuracy


def project_out(boundary: np.ndarray, *conditions: np.ndarray) -> np.ndarray:
    """Per layer: remove the components in the span of the conditions' rows, renormalise ``[1, L, C]``.

    With several conditions the projection is onto the orthogonal complement of their span (InterFaceGAN's
    conditional manipulation), not one condition after another, which would bring back a component along
    an earlier condition when the conditions are not orthogonal."""
    b = boundary[0].astype(np.float64)
    if conditions:
        c = np.stack([cond[0].astype(np.float64) for cond in conditions], axis=1)  # [L, K, C]
        for layer in range(b.shape[0]):
            q, _ = np.linalg.qr(c[layer].T)  # [C, K] orthonormal basis of the span
            b[layer] -= q @ (q.T @ b[layer])
    return (b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12))[None].astype(np.float32)


@torch.no_grad()
def layer_effects(generator: CodeGenerator, predictor: AttributePredictor, boundary: np.ndarray,
                  attribute: str, *, samples: int, distance: float, seed: int, batch: int) -> list[float]:
    """Mean predictor change when only layer l moves from −d to +d along its row, for each l."""
    codes = sample_codes(generator, samples, psi=0.7, seed=seed + 1)
    b = torch.from_numpy(boundary[0]).to(codes)
    effects = []
    for layer in range(codes.shape[1]):
        plus, minus = codes.clone(), codes.clone()
        plus[:, layer] += distance * b[layer]
        minus[:, layer] -= distance * b[layer]
        delta = score_codes(generator, predictor, plus, attribute, batch) - \
            score_codes(generator, predictor, minus, attribute, batch)
        effects.append(float(delta.mean() / 2))
    return effects


def choose_layers(effects: list[float], threshold: float) -> list[int]:
    best = max(effects)
    if best <= 0:
        raise ConfigError("no layer moves the attribute in the boundary's direction; "
                          "the predictor or the sample is not informative for it")
    return [i for i, e in enumerate(effects) if e >= threshold * best]


def train_boundary(generator: CodeGenerator, predictor: AttributePredictor, attribute: str,
                   config: BoundaryConfig = BoundaryConfig(), *, layers: list[int] | None = None,
                   conditions: dict[str, np.ndarray] | None = None, codes: torch.Tensor | None = None,
                   progress=None) -> BoundaryResult:
    """The whole InterFaceGAN procedure for one attribute (see the module docstring). ``codes``
    ``[N, L, C]`` (e.g. inverted real photos) replace the ``config.samples`` sampled ones."""
    generator.eval()
    predictor.eval()
    if codes is None:
        codes = sample_codes(generator, config.samples, psi=config.truncation_psi, seed=config.seed)
    config = replace(config, samples=codes.shape[0])
    scores = score_codes(generator, predictor, codes, attribute, config.batch)
    if progress:
        progress("scored")
    k = max(2, int(config.samples * config.keep_fraction))
    order = torch.argsort(scores)
    negatives, positives = order[:k], order[-k:]
    kept = torch.cat([negatives, positives])
    labels = np.concatenate([np.zeros(k, dtype=np.int64), np.ones(k, dtype=np.int64)])
    normals, accuracy = fit_layer_svms(codes[kept].cpu().numpy(), labels, c=config.svm_c,
                                       train_fraction=config.train_fraction, seed=config.seed)
    boundary = normals[None]
    boundary = project_out(boundary, *(conditions or {}).values())
    if progress:
        progress("fitted")
    effects = layer_effects(generator, predictor, boundary, attribute, samples=config.search_samples,
                            distance=config.search_distance, seed=config.seed, batch=config.batch)
    chosen = layers if layers is not None else choose_layers(effects, config.layer_threshold)
    return BoundaryResult(attribute=attribute, boundary=boundary, manipulate_layers=chosen, layer_effects=effects,
                          svm_accuracy=accuracy, samples=config.samples,
                          score_range=(float(scores[negatives[-1]]), float(scores[positives[0]])),
                          conditions=sorted((conditions or {}).keys()))
