"""Pivotal tuning (PTI, Roich et al., 2022): faithful reconstructions after in-domain inversion.

The code found by inversion (the pivot, ``w_p``) stays fixed; a copy of the generator is tuned
for each image i so that it reproduces x_i from w_p,i:

    θ_i* = argmin_θ  λ_L2·mean((x_i − G(w_p,i; θ))²) + λ_LPIPS·LPIPS_VGG(x_i, G(w_p,i; θ))
                     [+ λ_R·(λ_R,L2·mean((G(w_r; θ₀) − G(w_r; θ))²) + λ_R,LPIPS·LPIPS(G(w_r; θ₀), G(w_r; θ)))]

with Adam (lr 3e-4) from θ₀ (the pack's generator) for at most 350 steps; an image stops as soon
as its LPIPS is at most 0.06, checked before each update as PTI does. The optional locality
regulariser keeps codes near the pivot producing what θ₀ produced: w_r = w_p + α·(w − w_p)/‖w − w_p‖
for a random sample w of the prior (ψ = 0.5), α = 30. The defaults are PTI's.

All images of a batch are tuned at once: their weights are stacked (``[N, *shape]`` per
parameter) and one ``vmap``-ed ``functional_call`` of the generator runs every copy on its own
pivot (``tuned.batched_synthesize``). The per-image losses are summed and Adam works element by
element, so each image follows the trajectory it would follow alone; an image that has stopped
is left out of later forwards and its weights are no longer changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ..errors import ConfigError, NonFiniteError
from ..metrics import lpips_distance, mse
from ..metrics.lpips import MIN_SIZE as LPIPS_MIN_SIZE
from ..metrics.lpips import cached_lpips
from ..networks.derived import frozen
from .tuned import TunedWeights, base_weights, batched_synthesize, fingerprint, synthesize_tuned, tunable_names

REFINE_METHODS = ("pti",)


@dataclass(frozen=True)
class RefineConfig:
    """Settings of pivotal tuning; the defaults are PTI's (``hyperparameters.py``)."""

    method: str = "pti"  # only PTI for now
    steps: int = 350  # max_pti_steps: Adam updates per image at most
    lr: float = 3e-4  # pti_learning_rate
    lambda_l2: float = 1.0  # pt_l2_lambda, weight of the pixel MSE
    lambda_lpips: float = 1.0  # pt_lpips_lambda, weight of LPIPS (VGG trunk)
    lpips_threshold: float | None = 0.06  # LPIPS_value_threshold: an image stops once LPIPS ≤ this
    locality: bool = False  # use_locality_regularization
    lambda_locality: float = 1.0  # regulizer_lambda, λ_R
    locality_l2: float = 0.1  # regulizer_l2_lambda, λ_R,L2
    locality_lpips: float = 0.1  # regulizer_lpips_lambda, λ_R,LPIPS
    locality_alpha: float = 30.0  # regulizer_alpha, α: distance of w_r from the pivot
    locality_psi: float = 0.5  # truncation ψ of the prior samples w
    locality_interval: int = 1  # locality_regularization_interval: every this many steps
    # not PTI's: name prefixes of the generator parameters that are tuned (e.g. ("convTr4", "batchNorm4",
    # "convTr5")); () = every parameter synthesis depends on, as PTI tunes
    layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in REFINE_METHODS:
            raise ConfigError(f"refine method must be one of {', '.join(REFINE_METHODS)}; got {self.method!r}")
        if self.steps < 0 or not 0 < self.lr < float("inf") or self.locality_interval < 1:
            raise ConfigError("refine steps must be ≥ 0, lr a finite number > 0 and locality_interval ≥ 1")
        weights = (self.lambda_l2, self.lambda_lpips, self.lambda_locality, self.locality_l2, self.locality_lpips,
                   self.locality_alpha, self.lpips_threshold or 0.0)
        if min(weights) < 0:
            raise ConfigError("refine loss weights, α and the LPIPS threshold must be non-negative")
        if isinstance(self.layers, str) or not all(isinstance(v, str) and v for v in self.layers):
            raise ConfigError("refine layers must be a tuple of parameter-name prefixes like ('convTr4', 'convTr5')")


def refine_config(value: "str | RefineConfig | None", steps: int | None = None) -> RefineConfig | None:
    """``"pti"`` or a ``RefineConfig`` (``None`` stays ``None``), with ``steps`` overriding its steps."""
    if value is None:
        return None
    if not isinstance(value, (str, RefineConfig)):
        raise ConfigError(f"refine must be 'pti', a RefineConfig or None; got {type(value).__name__}")
    config = RefineConfig(method=value) if isinstance(value, str) else value
    if steps is not None:
        config = replace(config, steps=steps)
    return config


def pack_refine_config(pack, steps: int | None = None, **overrides) -> RefineConfig:
    """PTI's settings with the pack's own defaults (``ModelPack.refine_settings``: e.g. which layers to
    tune so that edits keep their strength) and then ``overrides`` and ``steps`` on top."""
    settings = {**pack.refine_settings(), **overrides}
    if steps is not None:
        settings["steps"] = steps
    return RefineConfig(**settings)


@dataclass
class RefineResult:
    """What tuning produced; tensors on the pack's device, images in [-1, 1]."""

    tuned: TunedWeights  # per-image changes to the generator, [N, ...] per parameter
    codes: torch.Tensor  # [N, L, C] the pivots, unchanged
    reconstructions: torch.Tensor  # [N, 3, R, R] G(pivot; θ_i*)
    steps_run: torch.Tensor  # [N] Adam updates each image received
    before: dict[str, torch.Tensor]  # "mse", "lpips" → [N], the untuned generator (clipped images)
    after: dict[str, torch.Tensor]  # the same with each image's tuned generator
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # term → [T, N] per step (last value held)
    seconds: float = 0.0
    base: str = ""  # fingerprint of the generator the deltas apply to
    config: RefineConfig | None = None

    def report(self) -> list[dict[str, float | int]]:
        """Per image: steps, MSE and LPIPS before and after tuning."""
        return [{"steps": int(self.steps_run[i]),
                 "mse_before": float(self.before["mse"][i]), "mse_after": float(self.after["mse"][i]),
                 "lpips_before": float(self.before["lpips"][i]), "lpips_after": float(self.after["lpips"][i])}
                for i in range(self.codes.shape[0])]


def refine(images: torch.Tensor, codes: torch.Tensor, pack, config: RefineConfig | None = None, *,
           batch_size: int | None = None, rng: torch.Generator | None = None,
           callback: Callable[[int, int, dict[str, torch.Tensor]], None] | None = None) -> RefineResult:
    """Tune one copy of ``pack.generator`` per image, images ``[N, 3, R, R]`` in [-1, 1] with their
    pivot codes ``[N, L, C]`` (kept fixed). ``batch_size`` images are tuned together (results do not
    depend on it); ``rng`` draws the locality samples; ``callback(batch_index, step, losses)``
    reports progress after every step with the per-image terms of the active images."""
    config = config or RefineConfig()
    generator, res = pack.generator, pack.resolution
    if images.ndim != 4 or images.shape[1:] != (3, res, res):
        raise ValueError(f"expected images [N, 3, {res}, {res}] in [-1, 1], got {list(images.shape)}")
    generator.check_codes(codes)
    if codes.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {codes.shape[0]} codes")
    if res < LPIPS_MIN_SIZE:
        raise ConfigError(f"pivotal tuning uses LPIPS, which needs images of at least {LPIPS_MIN_SIZE} px; "
                          f"this model makes {res} px images")
    device = pack.device
    images, codes = images.to(device), codes.detach().to(device)
    size = batch_size or images.shape[0]
    start = time.perf_counter()
    with frozen(generator):
        every = tunable_names(generator)
        names = tuned_names(every, config.layers)
        parts = [_refine_batch(generator, images[lo:lo + size], codes[lo:lo + size], names, config, rng,
                               None if callback is None else (lambda s, t, b=b: callback(b, s, t)))
                 for b, lo in enumerate(range(0, images.shape[0], size))]
        tuned = TunedWeights.cat([p[0] for p in parts])
        with torch.no_grad():
            before = _scores(images, synthesize_tuned(generator, None, codes, batch_size=size))
            recon = synthesize_tuned(generator, tuned, codes, batch_size=size)
            after = _scores(images, recon)
    steps_run = torch.cat([p[1] for p in parts])
    losses = {k: torch.cat([_pad(p[2][k], max(q[2][k].shape[0] for q in parts)) for p in parts], dim=1)
              for k in parts[0][2]}
    return RefineResult(tuned=tuned, codes=codes, reconstructions=recon, steps_run=steps_run, before=before,
                        after=after, losses=losses, seconds=time.perf_counter() - start,
                        base=fingerprint(generator, every), config=config)


def tuned_names(every: list[str], layers: tuple[str, ...]) -> list[str]:
    """The parameters a refinement tunes: those of ``every`` under one of the ``layers`` prefixes (all for ())."""
    if not layers:
        return every
    names = [k for k in every if any(k == p or k.startswith(p + ".") for p in layers)]
    if not names:
        raise ConfigError(f"refine layers {', '.join(layers)} name none of the generator's tunable parameters "
                          f"(they start with {', '.join(sorted({k.split('.')[0] for k in every})[:8])} …)")
    return names


def _refine_batch(generator, x: torch.Tensor, pivots: torch.Tensor, names: list[str], config: RefineConfig,
                  rng: torch.Generator | None, callback) -> tuple[TunedWeights, torch.Tensor, dict[str, torch.Tensor]]:
    """Tune the generators of one batch; returns their deltas, steps run and loss history ``[T, n]``."""
    n = x.shape[0]
    base = base_weights(generator, names)
    weights = {k: v.unsqueeze(0).repeat(n, *[1] * v.ndim).requires_grad_(True) for k, v in base.items()}
    optimizer = torch.optim.Adam(list(weights.values()), lr=config.lr)
    lpips = cached_lpips("vgg", x.device)
    history = {k: torch.zeros(config.steps, n, dtype=x.dtype) for k in ("total", "l2", "lpips")}
    active = torch.ones(n, dtype=torch.bool)
    steps_run = torch.zeros(n, dtype=torch.long)
    last = 0
    for step in range(config.steps):
        idx = torch.nonzero(active).flatten()
        sub = {k: w[idx.to(w.device)] for k, w in weights.items()}
        gi = idx.to(x.device)
        out = batched_synthesize(generator, sub, pivots[gi, None])[:, 0]  # [a, 3, R, R]
        terms = {"l2": (out - x[gi]).square().flatten(1).mean(dim=1), "lpips": lpips(out, x[gi])}
        total = config.lambda_l2 * terms["l2"] + config.lambda_lpips * terms["lpips"]
        if config.locality and config.lambda_locality > 0 and step % config.locality_interval == 0:
            total = total + config.lambda_locality * _locality(generator, sub, pivots[gi], config, lpips, rng)
        terms["total"] = total
        if not torch.isfinite(total).all():
            raise NonFiniteError(f"pivotal tuning: the loss became NaN/inf at step {step + 1}; lower the "
                                 f"refine learning rate")
        detached = {k: v.detach().cpu() for k, v in terms.items()}
        for k in history:
            history[k][step] = history[k][step - 1] if step else 0
            history[k][step, idx] = detached[k]
        last = step + 1
        # PTI checks the threshold before updating: an image that is close enough is not changed again.
        done = detached["lpips"] <= config.lpips_threshold if config.lpips_threshold is not None \
            else torch.zeros(len(idx), dtype=torch.bool)
        active[idx[done]] = False
        if callback is not None:
            callback(step + 1, detached)
        if not bool(active.any()):
            break
        keep = (~done).to(total.device)
        optimizer.zero_grad(set_to_none=True)
        (total * keep).sum().backward()
        stopped = (~active).to(next(iter(weights.values())).device)
        frozen_rows = {k: w.detach()[stopped].clone() for k, w in weights.items()} if bool(stopped.any()) else None
        optimizer.step()
        if frozen_rows is not None:  # Adam's momentum would still move an image that has stopped
            with torch.no_grad():
                for k, w in weights.items():
                    w[stopped] = frozen_rows[k]
        steps_run += active.long()
    deltas = {k: w.detach() - base[k].unsqueeze(0) for k, w in weights.items()}
    return TunedWeights(deltas), steps_run, {k: v[:last] for k, v in history.items()}


def _locality(generator, weights: dict[str, torch.Tensor], pivots: torch.Tensor, config: RefineConfig,
              lpips, rng: torch.Generator | None) -> torch.Tensor:
    """PTI's locality term per image ``[a]``: tuned and original generator agree at w_r near the pivot."""
    a = pivots.shape[0]
    z = torch.randn(a, generator.z_dim, generator=rng).to(pivots)
    with torch.no_grad():
        w = generator.sample_codes(z, truncation_psi=config.locality_psi)  # [a, L, C]
        direction = w - pivots
        norm = direction.flatten(1).norm(dim=1).clamp(min=1e-8).view(-1, 1, 1)
        w_r = pivots + config.locality_alpha * direction / norm
        old = generator.synthesize(w_r)
    new = batched_synthesize(generator, weights, w_r[:, None])[:, 0]
    return config.locality_l2 * (new - old).square().flatten(1).mean(dim=1) + config.locality_lpips * lpips(new, old)


def _scores(x: torch.Tensor, recon: torch.Tensor) -> dict[str, torch.Tensor]:
    """MSE and LPIPS (VGG) per image of the clipped reconstructions, as a saved file would hold them."""
    recon = recon.clamp(-1, 1)
    return {"mse": mse(x, recon).cpu(), "lpips": lpips_distance(x, recon, net="vgg").cpu()}


def _pad(history: torch.Tensor, steps: int) -> torch.Tensor:
    if history.shape[0] >= steps or history.shape[0] == 0:
        return history if history.shape[0] else torch.zeros(steps, history.shape[1])
    return torch.cat([history, history[-1:].expand(steps - history.shape[0], -1)])
