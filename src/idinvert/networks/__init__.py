"""The networks of IDInvert: generators G (one interface, several kinds), domain-guided encoder E,
discriminator D, VGG16 F."""

from torch import nn

from .base import CodeGenerator
from .config import DiscriminatorConfig, GeneratorConfig
from .dcgan import DCGANConfig, DCGANGenerator
from .discriminator import Discriminator
from .encoder import DomainGuidedEncoder
from .generator import StyleGANGenerator
from .stylegan2 import StyleGAN2Config, StyleGAN2Generator
from .stylegan2_discriminator import StyleGAN2Discriminator
from .vgg import VGG16Features

#: Each generator kind a pack's ``generator_kind`` may name: (generator class, its config class).
GENERATOR_KINDS: dict[str, tuple[type[CodeGenerator], type]] = {
    "stylegan": (StyleGANGenerator, GeneratorConfig),
    "dcgan": (DCGANGenerator, DCGANConfig),
    "stylegan2": (StyleGAN2Generator, StyleGAN2Config),
}

#: Each discriminator kind a pack's ``discriminator_kind`` may name (packs before the field hold "stylegan"):
#: (discriminator class, its config class). Encoder training only calls ``D(images)`` → logits ``[N, 1]``.
DISCRIMINATOR_KINDS: dict[str, tuple[type[nn.Module], type]] = {
    "stylegan": (Discriminator, DiscriminatorConfig),
    "stylegan2": (StyleGAN2Discriminator, StyleGAN2Config),
}

__all__ = ["CodeGenerator", "StyleGANGenerator", "DCGANGenerator", "DCGANConfig", "StyleGAN2Generator",
           "StyleGAN2Config", "StyleGAN2Discriminator", "GENERATOR_KINDS", "DISCRIMINATOR_KINDS",
           "DomainGuidedEncoder", "Discriminator", "VGG16Features"]
