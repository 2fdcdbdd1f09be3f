"""The networks of IDInvert: generator G, domain-guided encoder E, discriminator D, VGG16 F."""

from .discriminator import Discriminator
from .encoder import DomainGuidedEncoder
from .generator import StyleGANGenerator
from .vgg import VGG16Features

__all__ = ["StyleGANGenerator", "DomainGuidedEncoder", "Discriminator", "VGG16Features"]
