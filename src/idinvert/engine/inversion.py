"""The inversion engine: encoder-only, in-domain (Eq. 4), MSE-based and masked inversion.

One optimisation loop (``optimize_codes``) serves every optimisation-based method. It
minimises, for each image i and its W+ code z_i ``[L, C]``,

    L_i = λ_pix·mean((x_i − G(z_i))²·m) + λ_vgg·mean((F(x_i·m) − F(G(z_i)·m))²)
          + λ_dom·mean((z_i − E(G(z_i)))²)

with Adam (lr 0.01, default betas) from an initial code (E(x) for in-domain inversion, N(0, 1)
or the mean code for the MSE baseline). ``m`` is an optional pixel mask (semantic diffusion);
λ_dom = 0 gives the baselines. The per-image losses are summed, so each image follows the same
trajectory as when optimised alone. The networks are frozen while optimising: gradients flow
through them to the code, but no parameter gradient is computed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ..errors import ConfigError, NonFiniteError
from ..networks import CodeGenerator, DomainGuidedEncoder, VGG16Features
from ..networks.derived import frozen
from ..safety import check_float, check_int
from .refine import RefineConfig, RefineResult, refine, refine_config

METHODS = ("in-domain", "encoder", "mse", "conventional")
MAX_STEPS = 1_000_000  # optimisation steps of one inversion (the paper uses 100; baselines a few 1000)
MAX_WEIGHT = 1e6  # loss weights; the defaults are 1, 2 and 5e-5 (Caffe) or 0.166 (torchvision)
HISTORY_ROWS = 1024  # loss-history rows allocated at first; more as the steps run
INITS = ("encoder", "random", "mean")


@dataclass(frozen=True)
class InversionConfig:
    """Settings of one inversion; the defaults are the paper's in-domain inversion."""

    method: str = "in-domain"  # in-domain (Eq. 4) | encoder (E only) | mse (baseline) | conventional (Eq. 1 E)
    steps: int = 100  # T, Adam iterations (num_iterations)
    lr: float = 0.01  # Adam learning rate (learning_rate)
    lambda_pix: float = 1.0  # weight of the pixel MSE (reconstruction_loss_weight)
    lambda_vgg: float | None = None  # λ_vgg; None = the pack's calibrated value (5e-5 for Caffe VGG)
    lambda_dom: float = 2.0  # λ_dom of Eq. 4 (regularization_loss_weight); in-domain only
    init: str | None = None  # encoder | random | mean; None = encoder (in-domain), random (mse)
    early_stop: float | None = None  # stop an image once its loss changes by less than this, relatively,
    patience: int = 10  # … over this many steps
    refine: str | RefineConfig | None = None  # "pti" or a RefineConfig: tune a generator per image after

    def __post_init__(self) -> None:
        object.__setattr__(self, "refine", refine_config(self.refine))
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.init is not None and self.init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}; got {self.init!r}")
        check_int(self.steps, "steps", 0, MAX_STEPS)
        check_int(self.patience, "patience", 1, MAX_STEPS)
        check_float(self.lr, "lr", 0.0, 1e6, low_open=True)
        for name in ("lambda_pix", "lambda_dom", "lambda_vgg"):  # NaN would silently drop a term
            if name != "lambda_vgg" or self.lambda_vgg is not None:
                check_float(getattr(self, name), name, 0.0, MAX_WEIGHT)
        if self.early_stop is not None:
            check_float(self.early_stop, "early_stop", 0.0, 1.0, hint="a relative change of the loss")

    @property
    def optimises(self) -> bool:
        return self.method in ("in-domain", "mse")

    @property
    def initialisation(self) -> str:
        if self.init is not None:
            return self.init
        return "random" if self.method == "mse" else "encoder"

    @property
    def domain_weight(self) -> float:
        return self.lambda_dom if self.method == "in-domain" else 0.0


@dataclass
class InversionResult:
    """What an inversion produced; tensors on the pack's device, images in [-1, 1]."""

    codes: torch.Tensor  # [N, L, C] final codes
    init_codes: torch.Tensor  # [N, L, C] starting codes (E(x), random or mean)
    encoder_codes: torch.Tensor | None  # [N, L, C] E(x) when an encoder was run, else None
    reconstructions: torch.Tensor  # [N, 3, R, R] G(codes)
    encoder_reconstructions: torch.Tensor | None  # [N, 3, R, R] G(E(x)), the "encoder output" image
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # term → [T, N] per step, per image
    steps_run: torch.Tensor | None = None  # [N] optimisation steps each image ran
    seconds: float = 0.0
    config: InversionConfig | None = None
    refined: RefineResult | None = None  # pivotal tuning of each image (config.refine), else None

    def final_losses(self) -> list[dict[str, float]]:
        """Per image, each loss term at the last step it ran (empty dicts if nothing was optimised)."""
        n = self.codes.shape[0]
        if not self.losses or self.steps_run is None:
            return [{} for _ in range(n)]
        out = []
        for i in range(n):
            last = int(self.steps_run[i]) - 1
            out.append({k: float(v[last, i]) for k, v in self.losses.items()} if last >= 0 else {})
        return out


@dataclass
class OptimizationTrace:
    codes: torch.Tensor  # [N, L, C]
    losses: dict[str, torch.Tensor]  # [T, N]
    steps_run: torch.Tensor  # [N]


def optimize_codes(generator: CodeGenerator, perceptual: VGG16Features | None, target: torch.Tensor,
                   init_codes: torch.Tensor, *, steps: int, lr: float = 0.01, lambda_pix: float = 1.0,
                   lambda_vgg: float = 0.0, lambda_dom: float = 0.0,
                   encoder: DomainGuidedEncoder | None = None, mask: torch.Tensor | None = None,
                   early_stop: float | None = None, patience: int = 10,
                   callback: Callable[[int, dict[str, torch.Tensor]], None] | None = None) -> OptimizationTrace:
    """The single optimisation loop (see the module docstring for the objective).

    target ``[N, 3, R, R]``, init_codes ``[N, L, C]``, mask ``[N or 1, 1, R, R]`` (1 = constrained).
    ``callback(step, losses)`` is called after every step with the per-image loss terms ``[N]``.
    Call it with the networks frozen (``frozen(...)``) for speed; results are the same either way.
    """
    n = target.shape[0]
    if init_codes.shape[0] != n:
        raise ValueError(f"{n} images but {init_codes.shape[0]} initial codes")
    if lambda_dom > 0 and encoder is None:
        raise ConfigError("the domain regulariser (λ_dom > 0) needs an encoder")
    use_vgg = lambda_vgg > 0 and perceptual is not None
    masked_target = target if mask is None else target * mask
    with torch.no_grad():
        target_features = perceptual(masked_target) if use_vgg else None
    z = init_codes.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    names = ["total", "pix"] + (["vgg"] if use_vgg else []) + (["dom"] if lambda_dom > 0 else [])
    # The history stays on the codes' device and is copied to the host once, after the loop: a copy
    # per step would wait for the device at every step. Only early stopping reads it while running.
    # It grows as the steps run (doubling), so a huge ``steps`` allocates nothing up front.
    history = {k: torch.zeros(min(steps, HISTORY_ROWS), n, device=z.device) for k in names}
    active = torch.ones(n, dtype=torch.bool, device=z.device)
    steps_run = torch.zeros(n, dtype=torch.long, device=z.device)
    ran = steps
    for step in range(steps):
        recon = generator.synthesize(z)
        diff = recon - target if mask is None else (recon - target) * mask
        terms = {"pix": diff.square().flatten(1).mean(dim=1)}
        if use_vgg:
            recon_in = recon if mask is None else recon * mask
            terms["vgg"] = (perceptual(recon_in) - target_features).square().flatten(1).mean(dim=1)
        if lambda_dom > 0:
            terms["dom"] = (z - encoder(recon)).square().flatten(1).mean(dim=1)
        total = lambda_pix * terms["pix"]
        if use_vgg:
            total = total + lambda_vgg * terms["vgg"]
        if lambda_dom > 0:
            total = total + lambda_dom * terms["dom"]
        terms["total"] = total
        if early_stop is not None or _on_host(z):  # a check that costs nothing on the CPU
            _check_finite(total, step)
        optimizer.zero_grad(set_to_none=True)
        total.sum().backward()
        stopped_some = early_stop is not None and not bool(active.all())
        previous = z.detach().clone() if stopped_some else None
        optimizer.step()
        if previous is not None:
            with torch.no_grad():
                z[~active] = previous[~active]
        detached = {k: v.detach() for k, v in terms.items()}
        if step == history["total"].shape[0]:
            history = {k: _grown(v, steps) for k, v in history.items()}
        for k in names:
            history[k][step] = torch.where(active, detached[k], history[k][step - 1] if step else 0)
        steps_run += active.long()
        if callback is not None:
            callback(step + 1, detached)
        if early_stop is not None and step + 1 >= patience:
            before = history["total"][step + 1 - patience]
            change = (before - history["total"][step]).abs() / before.abs().clamp(min=1e-12)
            active &= change >= early_stop
            if not bool(active.any()):
                ran = step + 1
                break
    history = {k: v[:ran].cpu() for k, v in history.items()}
    if early_stop is None and not _on_host(z):  # one check for the whole run on an accelerator
        bad_steps = torch.nonzero(~torch.isfinite(history["total"]).all(dim=1)).flatten()
        if len(bad_steps):
            _check_finite(history["total"][bad_steps[0]], int(bad_steps[0]))
    return OptimizationTrace(codes=z.detach(), losses=history, steps_run=steps_run.cpu())


def _grown(history: torch.Tensor, steps: int) -> torch.Tensor:
    """A ``[t, N]`` loss history with room for twice as many steps (at most ``steps``)."""
    grown = history.new_zeros(min(2 * history.shape[0], steps), history.shape[1])
    grown[: history.shape[0]] = history
    return grown


def _on_host(t: torch.Tensor) -> bool:
    return t.device.type == "cpu"


def _check_finite(total: torch.Tensor, step: int) -> None:
    """The one-line error for a loss that became NaN/inf (``total`` ``[N]`` at ``step``, 0-based)."""
    if not torch.isfinite(total).all():
        bad = torch.nonzero(~torch.isfinite(total)).flatten().tolist()
        raise NonFiniteError(f"the loss became NaN/inf at step {step + 1} for image(s) {bad}; "
                             f"lower the learning rate (--lr)")


def encode(encoder: DomainGuidedEncoder, images: torch.Tensor) -> torch.Tensor:
    """E(x) in eval mode, no gradients: ``[N, L, C]``."""
    with frozen(encoder), torch.no_grad():
        return encoder(images)


def initial_codes(kind: str, n: int, generator: CodeGenerator, *, encoded: torch.Tensor | None,
                  rng: torch.Generator | None = None) -> torch.Tensor:
    shape = (n, *generator.code_shape)
    mean = generator.mean_code()  # [L, C]
    if kind == "encoder":
        assert encoded is not None
        return encoded
    if kind == "random":  # N(0, 1) in the code space (TF invert.py --random_init; the prior in Z)
        return torch.randn(shape, generator=rng).to(mean.device, mean.dtype)
    return mean.unsqueeze(0).expand(shape).clone()  # the mean code


def _encoder_for(pack, config: InversionConfig) -> DomainGuidedEncoder | None:
    """The encoder a method uses (the conventional one for "conventional"); an error if it needs a
    missing one."""
    encoder = pack.conventional_encoder if config.method == "conventional" else pack.encoder
    needs = config.method in ("encoder", "conventional") or config.initialisation == "encoder" \
        or config.domain_weight > 0
    if needs and encoder is None:
        which = "conventional encoder" if config.method == "conventional" else "encoder"
        raise ConfigError(f"pack {pack.name!r} has no {which}; choose another --method")
    return encoder


@dataclass
class _Batch:
    encoded: torch.Tensor | None
    init: torch.Tensor
    trace: OptimizationTrace


def _invert_batch(pack, x: torch.Tensor, config: InversionConfig, encoder, lambda_vgg: float,
                  mask: torch.Tensor | None, rng, callback, init: torch.Tensor | None = None) -> _Batch:
    generator = pack.generator
    encoded = encode(encoder, x) if encoder is not None else None
    if init is None:
        init = initial_codes(config.initialisation, x.shape[0], generator, encoded=encoded, rng=rng)
    if not (config.optimises and config.steps > 0):
        return _Batch(encoded, init, OptimizationTrace(init, {}, torch.zeros(x.shape[0], dtype=torch.long)))
    trace = optimize_codes(generator, pack.perceptual, x, init, steps=config.steps, lr=config.lr,
                           lambda_pix=config.lambda_pix, lambda_vgg=lambda_vgg, lambda_dom=config.domain_weight,
                           encoder=encoder, mask=mask, early_stop=config.early_stop, patience=config.patience,
                           callback=callback)
    return _Batch(encoded, init, trace)


def invert(images: torch.Tensor, pack, config: InversionConfig | None = None, *,
           mask: torch.Tensor | None = None, batch_size: int | None = None,
           rng: torch.Generator | None = None, init_codes: torch.Tensor | None = None,
           callback: Callable[[int, int, dict[str, torch.Tensor]], None] | None = None) -> InversionResult:
    """Invert images ``[N, 3, R, R]`` in [-1, 1] with a ``ModelPack``.

    ``mask`` ``[N or 1, 1, R, R]`` weights the pixel and perceptual terms (semantic diffusion);
    ``batch_size`` splits the work (results do not depend on it); ``rng`` seeds random
    initialisation; ``init_codes`` ``[N, L, C]`` are starting codes that replace ``config.init``'s;
    ``callback(batch_index, step, losses)`` reports progress (losses on the pack's device).
    """
    config = config or InversionConfig()
    generator, res = pack.generator, pack.resolution
    if images.ndim != 4 or images.shape[1:] != (3, res, res):
        raise ValueError(f"expected images [N, 3, {res}, {res}] in [-1, 1], got {list(images.shape)}")
    if init_codes is not None and tuple(init_codes.shape) != (images.shape[0], *pack.code_shape):
        raise ValueError(f"init_codes must be [{images.shape[0]}, {pack.code_shape[0]}, {pack.code_shape[1]}], "
                         f"got {list(init_codes.shape)}")
    encoder = _encoder_for(pack, config)
    lambda_vgg = pack.lambda_vgg(config.lambda_vgg)
    images = images.to(pack.device)
    start = time.perf_counter()
    size = batch_size or images.shape[0]
    batches = []
    with frozen(generator, pack.perceptual, encoder):
        for b, lo in enumerate(range(0, images.shape[0], size)):
            m = None if mask is None else (mask if mask.shape[0] == 1 else mask[lo:lo + size])
            report = None if callback is None else (lambda s, losses, b=b: callback(b, s, losses))
            init = None if init_codes is None else init_codes[lo:lo + size].to(pack.device)
            batches.append(_invert_batch(pack, images[lo:lo + size], config, encoder, lambda_vgg, m, rng, report,
                                         init))
        with torch.no_grad():
            codes = torch.cat([b.trace.codes for b in batches])
            recon = torch.cat([generator.synthesize(c) for c in codes.split(size)])
            encoder_codes = torch.cat([b.encoded for b in batches]) if encoder is not None else None
            unchanged = (not config.optimises or config.steps == 0) and config.initialisation == "encoder"
            if encoder_codes is None or unchanged:
                encoder_recon = recon if encoder_codes is not None else None
            else:
                encoder_recon = torch.cat([generator.synthesize(c) for c in encoder_codes.split(size)])
    result = InversionResult(
        codes=codes, init_codes=torch.cat([b.init for b in batches]), encoder_codes=encoder_codes,
        reconstructions=recon, encoder_reconstructions=encoder_recon, losses=_merge_losses(batches),
        steps_run=torch.cat([b.trace.steps_run for b in batches]), seconds=time.perf_counter() - start,
        config=replace(config, lambda_vgg=lambda_vgg))
    if config.refine is not None:  # the codes are the pivots; reconstructions stay G(codes) untuned
        result.refined = refine(images, codes, pack, config.refine, batch_size=size, rng=rng)
    return result


def _merge_losses(batches: list[_Batch]) -> dict[str, torch.Tensor]:
    """Per-step losses of all batches side by side, ``[T, N]`` (early-stopped batches padded)."""
    if not batches[0].trace.losses:
        return {}
    steps = max(b.trace.losses["total"].shape[0] for b in batches)
    return {k: torch.cat([_pad_steps(b.trace.losses[k], steps) for b in batches], dim=1)
            for k in batches[0].trace.losses}


def _pad_steps(history: torch.Tensor, steps: int) -> torch.Tensor:
    """Repeat the last row of a ``[t, N]`` history (an early-stopped batch) up to ``steps`` rows."""
    if history.shape[0] >= steps:
        return history
    return torch.cat([history, history[-1:].expand(steps - history.shape[0], -1)])


SMALL_PACK = 64  # resolution up to which a CPU inverts faster per image in batches
CPU_SMALL_BATCH = 16  # the batch size for such packs on a CPU (benchmarks/results/inversion_speed_cpu.md)


def default_batch_size(pack) -> int:
    """Images optimised together unless told otherwise: 8 on a GPU; on a CPU 16 for packs of at most
    64 px (1.4× the images per second of batch 1 there) and 1 for larger ones (batching is slower
    per image at 256 px). Measured in benchmarks/results/inversion_speed_cpu.md."""
    if pack.device.type != "cpu":
        return 8
    return CPU_SMALL_BATCH if pack.resolution <= SMALL_PACK else 1
