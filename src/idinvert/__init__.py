"""idinvert: in-domain GAN inversion for real image editing (Zhu et al., ECCV 2020) in PyTorch.

Quick start::

    import idinvert
    pack = idinvert.load_pack()                      # the bundled default face pack
    x = idinvert.read_images(["face.jpg"], pack.resolution)
    result = idinvert.invert(x, pack)                # in-domain inversion, 100 Adam steps
    idinvert.save_image(result.reconstructions[0], "face_inv.png")

The house (``docs/style.md``, "The house"): ``engine/`` inverts, tunes, edits and renders; ``pack``,
``images``, ``boundaries``, ``fileio`` and ``safety`` read and write files; ``networks/`` holds the
networks with their configurations; ``cli/`` and ``server/`` are the front ends.
"""

import sys

from . import metrics
from .boundaries import Boundary, load_boundary, save_boundary
from .engine import dataset_inversion, diffusion, directions, editing, inversion, refine as _refine, tuned
from .engine.diffusion import DiffusionResult, diffuse
from .engine.editing import interpolate, manipulate, mix
from .engine.inversion import InversionConfig, InversionResult, invert
from .engine.refine import RefineConfig, RefineResult, refine
from .errors import IdinvertError
from .images import read_image, read_images, save_image
from .networks import config
from .pack import ModelPack, load_pack, save_pack
from .version import __version__

# Modules that moved, under their old public names as well: ``import idinvert.tuned`` and
# ``from idinvert.editing import synthesize`` give the very same module objects as the new paths.
# (``idinvert.refine`` stays the function; the module is ``sys.modules["idinvert.refine"]``.)
MOVED = {
    "inversion": inversion, "refine": _refine, "tuned": tuned, "editing": editing, "directions": directions,
    "diffusion": diffusion, "dataset_inversion": dataset_inversion, "config": config,
}
for _name, _module in MOVED.items():
    sys.modules[f"{__name__}.{_name}"] = _module
    globals().setdefault(_name, _module)

__all__ = [
    "Boundary", "DiffusionResult", "IdinvertError", "InversionConfig", "InversionResult", "ModelPack",
    "RefineConfig", "RefineResult", "__version__", "diffuse", "interpolate", "invert", "load_boundary", "load_pack",
    "manipulate", "metrics", "mix", "read_image", "read_images", "refine", "save_boundary", "save_image",
    "save_pack",
]
