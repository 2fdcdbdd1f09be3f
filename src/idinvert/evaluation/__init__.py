"""Reproducing the paper's evaluation (Tables 1–2, Figs. 3 and 9) and measuring edit quality.

The library takes a ``ModelPack`` and image tensors and returns dataclasses and JSON-ready
dicts; ``idinvert evaluate`` is the command line around it (paths, cache folder, output files).

- ``suite``: ``EvaluationConfig``, ``Evaluation(...).run()`` → ``EvaluationResult``, resumable
  through a ``Cache`` (``cache``: the protocol, fingerprints, progress hooks);
- ``codes``: random pairs, interpolation midpoints, manipulation, projection on a boundary;
- ``distances``: FID/SWD of generated sets against one real set (``RealReference``);
- ``reconstruction``: per-image MSE, PSNR, SSIM, LPIPS, identity;
- ``editquality``: attribute change along a boundary or direction (per unit distance too),
  monotonicity (Spearman, monotone fraction), identity/LPIPS drift, the other attributes' movement
  and LEC (latent editing consistency);
- ``ranking``: precision–recall curves and average precision (as scikit-learn computes them);
- ``labels``: ground-truth labels from label rows, or the predictor's;
- ``outputs`` and ``plots``: the Markdown tables and the Pillow-drawn charts and grids.

Example (tiny numbers; see ``docs/results.md`` for the full run)::

    from idinvert import load_pack, read_images
    from idinvert.evaluation import EvaluationConfig, evaluate
    pack = load_pack("packs/utkface64")
    images = read_images(paths, pack.resolution)
    result = evaluate(pack, images, EvaluationConfig(steps=100, steps_mse=(100, 1000), pairs=100))
    result.results["table1"]["rows"][0]["metrics"]["mse"]["mean"]
"""

from ..fileio import json_ready
from .cache import Cache, MemoryCache
from .codes import boundary_projection, manipulation_codes, midpoints, random_pairs
from .distances import RealReference, SetDistance
from .editquality import EditQuality, edit_quality, latent_editing_consistency, monotone_fraction, slopes, spearman
from .labels import binarize, labels_from_rows, predictor_labels
from .ranking import PRCurve, average_precision, precision_recall_curve
from .suite import (Evaluation, EvaluationConfig, EvaluationResult, MethodSpec, evaluate, load_pack_boundaries,
                    load_pack_directions)

__all__ = [
    "Cache", "EditQuality", "Evaluation", "EvaluationConfig", "EvaluationResult", "MemoryCache", "MethodSpec",
    "PRCurve", "RealReference", "SetDistance", "average_precision", "binarize", "boundary_projection",
    "edit_quality", "evaluate", "json_ready", "labels_from_rows", "latent_editing_consistency", "load_pack_boundaries",
    "load_pack_directions", "manipulation_codes", "midpoints", "monotone_fraction", "precision_recall_curve",
    "predictor_labels", "random_pairs", "slopes", "spearman",
]
