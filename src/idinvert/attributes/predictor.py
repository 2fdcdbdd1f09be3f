"""Face-attribute predictor: one small CNN, binary attributes plus age, at a pack's framing.

The original authors never released a predictor for generated faces; boundaries need one.
The network is a compact residual CNN (about 1.2 M parameters at 64 px): a stem, stride-2
residual stages, global average pooling, and two heads — logits for the binary attributes
(CelebA's 40, with ``Male`` also supervised by UTKFace's gender) and age in years (UTKFace).
Labels a sample lacks are masked out of the loss, so the two data sets train one network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)

#: Short, user-facing names for the attributes the default pack edits → predictor outputs.
EDIT_NAMES = {
    "age": "age", "gender": "Male", "smile": "Smiling", "eyeglasses": "Eyeglasses",
    "mouth_open": "Mouth_Slightly_Open", "bangs": "Bangs", "blond_hair": "Blond_Hair",
    "black_hair": "Black_Hair", "gray_hair": "Gray_Hair", "beard": "No_Beard",
}

AGE_SCALE = 50.0  # the age head predicts years / AGE_SCALE


@dataclass(frozen=True)
class PredictorConfig:
    resolution: int = 64  # input side, the pack's resolution
    binary: tuple[str, ...] = CELEBA_ATTRIBUTES  # binary attribute names (logit outputs)
    channels: tuple[int, ...] = (32, 64, 128, 256)  # widths of the residual stages
    # (left, top, side) in unit coordinates of the input: the square that a predictor trained in a
    # tighter framing reads (resampled to ``resolution``); None = the whole image
    input_crop: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.input_crop is not None:
            crop = tuple(float(v) for v in self.input_crop)
            if len(crop) != 3 or not (0 < crop[2] <= 1 and 0 <= crop[0] <= 1 - crop[2] + 1e-6
                                      and 0 <= crop[1] <= 1 - crop[2] + 1e-6):
                raise ConfigError(f"input_crop must be (left, top, side) of a square inside the image, got {crop}")
            object.__setattr__(self, "input_crop", crop)


class _Stage(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Conv2d(cin, cout, 1, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class AttributePredictor(nn.Module):
    """Images ``[N, 3, R, R]`` in [-1, 1] → ``(logits [N, B], age_years [N])``."""

    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        self.config = config
        c0 = config.channels[0]
        self.stem = nn.Sequential(nn.Conv2d(3, c0, 3, padding=1, bias=False), nn.BatchNorm2d(c0), nn.ReLU())
        stages, cin = [], c0
        for cout in config.channels:
            stages.append(_Stage(cin, cout))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(0.2)
        self.binary_head = nn.Linear(cin, len(config.binary))
        self.age_head = nn.Linear(cin, 1)
        #: output name → (a, b) of its calibration in the pack's framing (``attributes.calibration``)
        self.calibration: dict[str, tuple[float, float]] = {}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        r = self.config.resolution
        if self.config.input_crop is not None:
            x = crop_square(x, self.config.input_crop, r)
        elif x.shape[-1] != r:
            x = F.interpolate(x, size=(r, r), mode="area" if x.shape[-1] > r else "bilinear", align_corners=None)
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.dropout(self.features(x))
        return self.binary_head(h), self.age_head(h).squeeze(1) * AGE_SCALE

    def score(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """One attribute per image: the logit of a binary attribute, or age in years."""
        logits, age = self(x)
        if name == "age":
            return age
        return logits[:, self.index(name)]

    def reading(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """``score`` through the pack's calibration of ``name`` (``a·score + b``), where it has one: the
        logit whose sigmoid is the probability to trust, or age in years."""
        value = self.score(x, name)
        if name in self.calibration:
            a, b = self.calibration[name]
            value = value * a + b
        return value

    def index(self, name: str) -> int:
        try:
            return self.config.binary.index(name)
        except ValueError:
            raise KeyError(f"unknown attribute {name!r}") from None

    @property
    def names(self) -> tuple[str, ...]:
        return ("age",) + tuple(self.config.binary)


def crop_square(x: torch.Tensor, crop: tuple[float, float, float], size: int) -> torch.Tensor:
    """The square ``(left, top, side)`` (unit coordinates) of images ``[N, C, H, W]``, bilinearly
    resampled to ``size``×``size`` (differentiable, exact for fractional boxes)."""
    left, top, side = crop
    theta = torch.tensor([[side, 0.0, 2 * left + side - 1], [0.0, side, 2 * top + side - 1]],
                         dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def crop_between(outer, inner) -> tuple[float, float, float]:
    """The square of an image in framing ``outer`` that holds what framing ``inner`` frames
    (least-squares scale and shift between their landmark points; both are upright)."""
    a = np.array([outer.eye_left, outer.eye_right, outer.mouth], dtype=np.float64)  # unit coords, outer
    b = np.array([inner.eye_left, inner.eye_right, inner.mouth], dtype=np.float64)  # same points, inner
    ac, bc = a - a.mean(0), b - b.mean(0)
    scale = float((ac * bc).sum() / (ac * ac).sum())  # inner = scale · outer + shift
    shift = b.mean(0) - scale * a.mean(0)
    side = 1.0 / scale
    left, top = -shift / scale
    return (round(float(left), 4), round(float(top), 4), round(side, 4))


@dataclass
class PredictorTargets:
    """A batch's labels; NaN marks a label the sample does not have."""

    binary: torch.Tensor  # [N, B] in {0, 1, nan}
    age: torch.Tensor  # [N] years or nan


def predictor_loss(model: AttributePredictor, images: torch.Tensor, targets: PredictorTargets) -> dict[str, torch.Tensor]:
    """Masked BCE over the binary labels + L1 on age (in units of AGE_SCALE)."""
    logits, age = model(images)
    known = ~torch.isnan(targets.binary)
    bce = F.binary_cross_entropy_with_logits(logits[known], targets.binary[known]) if known.any() \
        else logits.sum() * 0
    has_age = ~torch.isnan(targets.age)
    l1 = ((age[has_age] - targets.age[has_age]).abs() / AGE_SCALE).mean() if has_age.any() else age.sum() * 0
    return {"total": bce + l1, "bce": bce, "age_l1": l1}


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (rank statistic, ties averaged); NaN without both classes."""
    labels = labels.bool()
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return math.nan
    order = scores.argsort()
    ranks = torch.empty_like(scores, dtype=torch.float64)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    sorted_scores = scores[order]
    start = 0
    for end in range(1, len(scores) + 1):  # average the ranks of ties
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = ranks[order[start:end]].mean()
            start = end
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


@dataclass
class PredictorReport:
    accuracy: dict[str, float] = field(default_factory=dict)
    auc: dict[str, float] = field(default_factory=dict)
    positives: dict[str, int] = field(default_factory=dict)
    age_mae: float = math.nan
    count: int = 0
