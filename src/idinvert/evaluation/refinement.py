"""Pivotal tuning in the evaluation: does PTI make reconstructions faithful, and do edits survive it?

For each pivot (the codes of a Table 1 row: in-domain inversion, the MSE-optimised baseline) every
image's generator is tuned (``refine``) and measured like a Table 1 row — MSE, PSNR, SSIM, LPIPS and
identity of the clipped reconstructions, and the time per image at the evaluation's tuning batch —
next to the same pivots rendered by the pack's generator. Editability after tuning: each boundary's
edits at −d and +d of the pivot, rendered by the image's tuned generator and by the pack's, scored by
the attribute predictor (``target_change`` = direction·(s(+d) − s(−d)), logit or years, as in edit
quality), plus LPIPS and identity of each edit to its own reconstruction (how much the edit changes
besides the attribute). The paper's argument predicts that tuning around an in-domain pivot keeps
edits working better than tuning around an MSE pivot, which lies outside the generator's domain.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..boundaries import Boundary
from ..engine.editing import manipulate
from ..engine.refine import RefineConfig, refine
from ..engine.tuned import TunedWeights, synthesize_tuned
from ..metrics import lpips_distance
from ..metrics.identity import face_descriptors
from .cache import ProgressFactory, no_progress
from .editquality import attribute_scores
from .reconstruction import PairScores, pair_metrics



def tuned_pivot(pack, images: torch.Tensor, codes: torch.Tensor, config: RefineConfig, *, batch_size: int,
                seed: int = 0, progress: ProgressFactory | None = None) -> tuple[TunedWeights, dict[str, Any]]:
    """Tune every image's generator around its pivot; the deltas and the timing/steps summary."""
    n = images.shape[0]
    with (progress or no_progress)(f"PTI ({config.steps} steps)", -(-n // batch_size) * config.steps) as bar:
        result = refine(images.to(pack.device), codes.to(pack.device), pack, config, batch_size=batch_size,
                        rng=torch.Generator().manual_seed(seed), callback=lambda b, s, losses: bar.update(1))
    steps = result.steps_run.double()
    summary = {"seconds": result.seconds, "seconds_per_image": result.seconds / n, "batch_size": batch_size,
               "steps_mean": float(steps.mean()), "steps_max": int(steps.max()),
               "stopped_early": float((result.steps_run < config.steps).double().mean()),
               "settings": asdict(config)}
    return result.tuned.to("cpu"), summary


@torch.no_grad()
def reconstruction_scores(pack, images: torch.Tensor, codes: torch.Tensor, tuned: TunedWeights | None,
                          names: tuple[str, ...], *, batch: int = 8) -> dict[str, Any]:
    """Table 1's paired metrics of the pivots' reconstructions (by the tuned generators when given)."""
    scores = PairScores()
    device = pack.device
    for lo in range(0, images.shape[0], batch):
        c = codes[lo:lo + batch].to(device)
        t = None if tuned is None else tuned.select(slice(lo, lo + batch)).to(device)
        fake = synthesize_tuned(pack.generator, t, c, batch_size=batch).clamp(-1, 1)
        for name, values in pair_metrics(images[lo:lo + batch].to(device), fake, names).items():
            scores.add(name, values)
    return scores.summary()


@torch.no_grad()
def edit_scores(pack, codes: torch.Tensor, tuned: TunedWeights | None, boundary: Boundary, *, layers: list[int],
                distance: float, predictor, output: str | None, direction: float, lpips: bool, identity: bool,
                batch: int = 8) -> dict[str, Any]:
    """Edits at −d and +d rendered by the tuned (or the pack's) generators: the predictor's change of
    the target and how far each edit moves from its reconstruction (LPIPS, identity)."""
    device = pack.device
    change, lp, ident = [], [], []
    for lo in range(0, codes.shape[0], batch):
        c = codes[lo:lo + batch].to(device)
        t = None if tuned is None else tuned.select(slice(lo, lo + batch)).to(device)
        edited = manipulate(c, boundary, distances=torch.tensor([-distance, 0.0, distance]), layers=layers)
        images = synthesize_tuned(pack.generator, t, edited, batch_size=batch).clamp(-1, 1)  # [B, 3, 3, R, R]
        low, ref, high = images[:, 0], images[:, 1], images[:, 2]
        if predictor is not None and output is not None:
            index = list(predictor.names).index(output)  # scores: age (years), then the binary logits
            s_low, s_high = attribute_scores(predictor, low)[:, index], attribute_scores(predictor, high)[:, index]
            change.append(direction * (s_high - s_low))
        if lpips:
            lp.append(torch.stack([lpips_distance(ref, low, net="vgg"), lpips_distance(ref, high, net="vgg")]).mean(0).cpu())
        if identity:
            d_ref = face_descriptors(ref)
            ident.append(torch.stack([F.cosine_similarity(d_ref, face_descriptors(x), dim=1)
                                      for x in (low, high)]).mean(0).cpu())
    mean = (lambda rows: float(torch.cat(rows).double().mean()) if rows else None)
    return {"target_change": mean(change), "lpips_to_reconstruction": mean(lp), "identity_to_reconstruction": mean(ident)}


def pti_comparison(pack, images: torch.Tensor, pivots: dict[str, tuple[str, torch.Tensor]], config: RefineConfig, *,
                   pair_names: tuple[str, ...], boundaries: dict[str, tuple[Boundary, list[int], str | None, float]],
                   predictor=None, distance: float = 3.0, batch_size: int = 8, metric_batch: int = 8,
                   lpips: bool = True, identity: bool = False, seed: int = 0,
                   progress: ProgressFactory | None = None,
                   cached: Callable[[str, Callable[[], dict]], dict] | None = None,
                   keep: dict[str, TunedWeights] | None = None) -> dict[str, Any]:
    """The PTI rows for each pivot ``key → (label, codes [N, L, C])``: reconstruction and edits, with
    and without tuning. ``boundaries``: name → (boundary, layers, predictor output or None, direction).
    ``cached(key, compute)`` may store each pivot's part (the evaluation's resume cache); ``keep``, if
    given, receives each freshly tuned pivot's weights (for figures)."""
    cached = cached or (lambda key, compute: compute())
    out: dict[str, Any] = {"settings": asdict(config), "distance": distance, "batch_size": batch_size,
                           "pivots": {}}
    for key, (label, codes) in pivots.items():
        def compute(key=key, codes=codes, label=label) -> dict[str, Any]:
            started = time.perf_counter()
            tuned, timing = tuned_pivot(pack, images, codes, config, batch_size=batch_size, seed=seed,
                                        progress=progress)
            if keep is not None:
                keep[key] = tuned
            entry: dict[str, Any] = {"label": label, "timing": timing,
                                     "untuned": reconstruction_scores(pack, images, codes, None, pair_names,
                                                                      batch=metric_batch),
                                     "tuned": reconstruction_scores(pack, images, codes, tuned, pair_names,
                                                                    batch=metric_batch), "edits": {}}
            for name, (boundary, layers, output, direction) in boundaries.items():
                entry["edits"][name] = {
                    which: edit_scores(pack, codes, t, boundary, layers=layers, distance=distance, predictor=predictor,
                                       output=output, direction=direction, lpips=lpips, identity=identity,
                                       batch=metric_batch)
                    for which, t in (("untuned", None), ("tuned", tuned))}
            entry["seconds_total"] = time.perf_counter() - started
            return entry

        out["pivots"][key] = cached(key, compute)
    return out


def pti_markdown(pti: dict[str, Any]) -> list[str]:
    """The PTI section of results.md: reconstruction with and without tuning, then edits."""
    if not pti or "pivots" not in pti:
        return []
    s = pti["settings"]
    lines = ["## Pivotal tuning (PTI)", "",
             f"Each image's generator tuned around its pivot: at most {s['steps']} Adam steps (lr {s['lr']}), "
             f"stopping at LPIPS ≤ {s['lpips_threshold']}, {pti['batch_size']} images at a time. Reconstructions "
             f"by the pack's generator (untuned) and by each image's tuned generator.", "",
             "| Pivot | Generator | MSE ↓ | PSNR ↑ | SSIM ↑ | LPIPS ↓ | ID ↑ | PTI s/image | mean steps |",
             "|---|---|---|---|---|---|---|---|---|"]
    cell = (lambda v, d=4: "–" if v is None else f"{v:.{d}f}")
    for entry in pti["pivots"].values():
        for which in ("untuned", "tuned"):
            m = entry[which]
            get = (lambda name: (m.get(name) or {}).get("mean"))
            t = entry["timing"]
            lines.append(f"| {entry['label']} | {'tuned (PTI)' if which == 'tuned' else 'pack'} | {cell(get('mse'))} | "
                         f"{cell(get('psnr'), 2)} | {cell(get('ssim'))} | {cell(get('lpips'))} | {cell(get('identity'))} | "
                         f"{cell(t['seconds_per_image'], 1) if which == 'tuned' else '–'} | "
                         f"{cell(t['steps_mean'], 0) if which == 'tuned' else '–'} |")
    names = sorted({n for e in pti["pivots"].values() for n in e["edits"]})
    if names:
        lines += ["", f"Edits at ±{pti['distance']:g}: the predictor's change of the edited attribute "
                      "(direction·(s(+d) − s(−d)), logit or years; larger = the edit works) and LPIPS of the edits to "
                      "their own reconstruction.", "",
                  "| Boundary | Pivot | change (pack) | change (tuned) | LPIPS (pack) | LPIPS (tuned) |", "|---|---|---|---|---|---|"]
        for name in names:
            for entry in pti["pivots"].values():
                e = entry["edits"].get(name)
                if e is None:
                    continue
                lines.append(f"| {name} | {entry['label']} | {cell(e['untuned']['target_change'], 3)} | "
                             f"{cell(e['tuned']['target_change'], 3)} | {cell(e['untuned']['lpips_to_reconstruction'])} | "
                             f"{cell(e['tuned']['lpips_to_reconstruction'])} |")
    return lines + [""]
