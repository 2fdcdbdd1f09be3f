"""idinvert: in-domain GAN inversion for real image editing (Zhu et al., ECCV 2020) in PyTorch.

Quick start::

    import idinvert
    pack = idinvert.load_pack()                      # the bundled default face pack
    x = idinvert.read_images(["face.jpg"], pack.resolution)
    result = idinvert.invert(x, pack)                # in-domain inversion, 100 Adam steps
    idinvert.save_image(result.reconstructions[0], "face_inv.png")
"""

__version__ = "0.1.0"

from . import metrics  # noqa: E402
from .diffusion import DiffusionResult, diffuse  # noqa: E402
from .editing import Boundary, interpolate, load_boundary, manipulate, mix, save_boundary  # noqa: E402
from .errors import IdinvertError  # noqa: E402
from .images import read_image, read_images, save_image  # noqa: E402
from .inversion import InversionConfig, InversionResult, invert  # noqa: E402
from .pack import ModelPack, load_pack, save_pack  # noqa: E402
from .refine import RefineConfig, RefineResult, refine  # noqa: E402

__all__ = [
    "Boundary", "DiffusionResult", "IdinvertError", "InversionConfig", "InversionResult", "ModelPack",
    "RefineConfig", "RefineResult", "diffuse", "interpolate", "invert", "load_boundary", "load_pack", "manipulate",
    "metrics", "mix", "read_image", "read_images", "refine", "save_boundary", "save_image", "save_pack",
]
