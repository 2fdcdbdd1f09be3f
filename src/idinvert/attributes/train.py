"""Training and evaluating the attribute predictor on prepared, labelled photo caches.

Labels come from the ``index.json`` rows of ``prepare-data --labels``: UTKFace rows give
``age`` and ``gender`` (0 male, 1 female → ``Male`` = 1 − gender), CelebA rows give the 40
binary attributes. Mixed batches are drawn from all sets with the deterministic, resumable
sampler of the training package, so the long-run driver (checkpoints, resume) applies as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..parallel import Distributed
from ..training.common import load_trainer_state, trainer_state, update
from ..training.data import BatchSampler, seeded
from ..datasets import ImageDataset
from .predictor import AttributePredictor, PredictorConfig, PredictorReport, PredictorTargets, predictor_loss, roc_auc


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def dataset_targets(dataset: ImageDataset, binary: tuple[str, ...]) -> PredictorTargets:
    """Per-image label tensors of a prepared set (NaN where a label is absent)."""
    n = len(dataset)
    bin_t = torch.full((n, len(binary)), math.nan)
    age = torch.full((n,), math.nan)
    for i, row in enumerate(dataset.labels):
        for j, name in enumerate(binary):
            if name in row:
                bin_t[i, j] = _float(row[name])
        if "gender" in row and "Male" in binary and not math.isnan(_float(row["gender"])):
            bin_t[i, binary.index("Male")] = 1.0 - _float(row["gender"])
        if "age" in row:
            age[i] = _float(row["age"])
    return PredictorTargets(binary=bin_t, age=age)


@dataclass(frozen=True)
class PredictorTrainConfig:
    predictor: PredictorConfig = PredictorConfig()
    total_kimg: float = 200.0
    batch_size: int = 64
    lr: float = 2e-3  # AdamW, cosine decay to 5 %
    weight_decay: float = 1e-4
    max_shift: int = 3  # random translation in pixels (reflect padding)
    seed: int = 0


class PredictorTrainer:
    """Trains an AttributePredictor on the concatenation of several labelled sets."""

    def __init__(self, config: PredictorTrainConfig, datasets: list[ImageDataset],
                 world: Distributed | None = None) -> None:
        self.config, self.world = config, world or Distributed()
        torch.manual_seed(config.seed)
        self.model = AttributePredictor(config.predictor).to(self.world.device).train()
        self.images = [d for d in datasets]
        targets = [dataset_targets(d, config.predictor.binary) for d in datasets]
        self.binary = torch.cat([t.binary for t in targets])
        self.age = torch.cat([t.age for t in targets])
        self.offsets = np.cumsum([0] + [len(d) for d in datasets])
        self.sampler = BatchSampler(int(self.offsets[-1]), seed=config.seed, mirror=True)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.images_seen = 0
        self.step_index = 0

    def _images(self, indices: np.ndarray) -> torch.Tensor:
        out = []
        for i in indices:
            k = int(np.searchsorted(self.offsets, i, side="right") - 1)
            out.append(self.images[k].batch(np.asarray([i - self.offsets[k]])))
        return torch.cat(out)

    def _augment(self, x: torch.Tensor, cursor: int) -> torch.Tensor:
        flips = self.sampler.flips(cursor, x.shape[0])
        x[flips] = x[flips].flip(3)
        s = self.config.max_shift
        if s:
            rng = seeded(self.config.seed, 5, cursor)
            padded = torch.nn.functional.pad(x, (s, s, s, s), mode="reflect")
            dx, dy = torch.randint(0, 2 * s + 1, (2, x.shape[0]), generator=rng)
            x = torch.stack([padded[i, :, dy[i]:dy[i] + x.shape[2], dx[i]:dx[i] + x.shape[3]]
                             for i in range(x.shape[0])])
        return x

    def lr_at(self, images_seen: int) -> float:
        t = min(images_seen / max(self.config.total_kimg * 1000, 1), 1.0)
        return self.config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))

    def train_step(self) -> dict[str, float]:
        b = self.config.batch_size
        idx = self.sampler.indices(self.images_seen, b)
        x = self._augment(self._images(idx), self.images_seen).to(self.world.device)
        targets = PredictorTargets(self.binary[idx].to(x.device), self.age[idx].to(x.device))
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.images_seen)
        losses = predictor_loss(self.model, x, targets)
        update(self.opt, self.model.parameters(), losses["total"], losses, self.step_index, self.world)
        self.images_seen += b
        self.step_index += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    STATE = ("model", "opt")  # what a checkpoint holds besides the counters

    def state_dict(self) -> dict:
        return trainer_state(self, self.STATE)

    def load_state_dict(self, state: dict) -> None:
        load_trainer_state(self, state, self.STATE)


@torch.no_grad()
def predict_dataset(model: AttributePredictor, dataset: ImageDataset, *, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N, B]`` and ages ``[N]`` for every image of a prepared set."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    logits, ages = [], []
    for lo in range(0, len(dataset), batch):
        x = dataset.batch(np.arange(lo, min(lo + batch, len(dataset)))).to(device)
        lg, ag = model(x)
        logits.append(lg.cpu())
        ages.append(ag.cpu())
    model.train(was)
    return torch.cat(logits), torch.cat(ages)


def evaluate_predictor(model: AttributePredictor, datasets: list[ImageDataset]) -> PredictorReport:
    """Accuracy (threshold 0) and ROC AUC per binary attribute, age MAE, over held-out sets."""
    binary = model.config.binary
    all_logits, all_ages, all_bin, all_age = [], [], [], []
    for ds in datasets:
        logits, ages = predict_dataset(model, ds)
        t = dataset_targets(ds, binary)
        all_logits.append(logits), all_ages.append(ages), all_bin.append(t.binary), all_age.append(t.age)
    logits, ages = torch.cat(all_logits), torch.cat(all_ages)
    labels, true_age = torch.cat(all_bin), torch.cat(all_age)
    report = PredictorReport(count=len(logits))
    for j, name in enumerate(binary):
        known = ~torch.isnan(labels[:, j])
        if known.sum() == 0:
            continue
        y, s = labels[known, j], logits[known, j]
        report.accuracy[name] = float(((s > 0).float() == y).float().mean())
        report.auc[name] = roc_auc(s, y)
        report.positives[name] = int(y.sum())
    has_age = ~torch.isnan(true_age)
    if has_age.any():
        report.age_mae = float((ages[has_age] - true_age[has_age]).abs().mean())
    return report
