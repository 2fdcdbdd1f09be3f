"""Rendering codes: by the pack's generator (``synthesize``), or by per-image tuned generators — one
base generator plus each image's changes to its weights.

Pivotal tuning (``refine``) gives every image its own copy of the generator. A copy differs from
the pack's generator only in the parameters that ``synthesize`` reads (the synthesis network of a
StyleGAN, every convolution and BatchNorm affine of a DCGAN; never the mapping network), so a
``TunedWeights`` keeps just those, as differences from the base: ``deltas[name]`` is
``[N, *shape]`` with ``θ_i − θ`` for image i (zero rows for an image that was not changed).

Rendering (``synthesize_tuned``) stacks ``θ + Δ_i`` and runs the generator once for all images
with ``torch.func.functional_call`` under ``vmap``: image i's codes go through image i's weights,
and PyTorch turns the per-image convolutions into grouped ones. Every generator kind works
unchanged, since the generator's own ``synthesize`` is what runs.

On disk, one safetensors file per image holds the non-zero deltas, in float16 by default (a delta
is small, so its float16 rounding error is far below an 8-bit pixel: see ``tests/test_refine.py``
and ``docs/pti.md``), with the base generator's fingerprint in the metadata so that a file is never
applied to another generator.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.func import functional_call, vmap

from ..errors import CheckpointError
from ..networks import CodeGenerator
from ..networks.derived import frozen

TUNED_FORMAT = "idinvert-tuned"
TUNED_VERSION = 1


class _Synthesis(nn.Module):
    """``synthesize`` as a module's forward, so that ``functional_call`` can swap its weights."""

    def __init__(self, generator: CodeGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.generator.synthesize(codes)


def tunable_names(generator: CodeGenerator) -> list[str]:
    """The floating parameters ``synthesize`` depends on, found by one backward pass from the mean
    code: the mapping network, StyleGAN's ``lod`` and any other unused parameter are left out."""
    params = {k: v.detach().clone().requires_grad_(True) for k, v in generator.named_parameters()
              if v.is_floating_point()}
    code = generator.mean_code().detach().unsqueeze(0)
    with torch.enable_grad():
        out = functional_call(_Synthesis(generator), {f"generator.{k}": v for k, v in params.items()}, (code,))
        grads = torch.autograd.grad(out.sum(), list(params.values()), allow_unused=True)
    return [k for k, g in zip(params, grads) if g is not None]


def base_weights(generator: CodeGenerator, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The generator's own values of the tunable parameters (detached, not copied)."""
    own = dict(generator.named_parameters())
    return {k: own[k].detach() for k in (names or tunable_names(generator))}


def fingerprint(generator: CodeGenerator, names: list[str] | None = None) -> str:
    """SHA-256 (first 16 hex digits) of the tunable weights as float32: what a tuned file was made for."""
    h = hashlib.sha256()
    for k, v in base_weights(generator, names).items():
        h.update(k.encode())
        h.update(v.float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class TunedWeights:
    """Each image's changes to the generator: name → ``[N, *shape]`` deltas (the generator's dtype)."""

    deltas: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return next(iter(self.deltas.values())).shape[0] if self.deltas else 0

    def select(self, index: torch.Tensor | list[int] | slice) -> "TunedWeights":
        return TunedWeights({k: v[index] for k, v in self.deltas.items()})

    def to(self, device: torch.device | str) -> "TunedWeights":
        return TunedWeights({k: v.to(device) for k, v in self.deltas.items()})

    def changed(self) -> torch.Tensor:
        """``[N]`` bool: whether image i's generator differs from the base at all."""
        flags = [v.reshape(v.shape[0], -1).ne(0).any(dim=1) for v in self.deltas.values()]
        return torch.stack(flags).any(dim=0) if flags else torch.zeros(0, dtype=torch.bool)

    @staticmethod
    def zeros(generator: CodeGenerator, n: int, names: list[str] | None = None) -> "TunedWeights":
        """``n`` untuned copies (every delta zero)."""
        return TunedWeights({k: torch.zeros(n, *v.shape, dtype=v.dtype, device=v.device)
                             for k, v in base_weights(generator, names).items()})

    @staticmethod
    def cat(parts: list["TunedWeights"]) -> "TunedWeights":
        return TunedWeights({k: torch.cat([p.deltas[k] for p in parts]) for k in parts[0].deltas})

    def lerp(self, other: "TunedWeights", t: torch.Tensor) -> "TunedWeights":
        """Image i's deltas moved towards ``other``'s by ``t[i]`` (both ``[N]`` long): ``Δ + t·(Δ' − Δ)``."""
        out = {}
        for k, v in self.deltas.items():
            w = t.to(v).view(-1, *[1] * (v.ndim - 1))
            out[k] = torch.lerp(v, other.deltas[k].to(v), w)
        return TunedWeights(out)


def tuned_between(generator: CodeGenerator, start: TunedWeights | None, end: TunedWeights | None,
                  t: torch.Tensor) -> TunedWeights | None:
    """The generators on the way from one tuned generator to another, for interpolating between two
    photos: row k is ``Δ_start + t[k]·(Δ_end − Δ_start)`` (``start``, ``end``: one row each; ``None`` is
    the untuned generator, Δ = 0; both ``None`` give ``None``). Tuning moves a generator only slightly
    from the pack's, and straight lines between small changes of one network stay in its basin, so
    both ends reproduce their photos' faithful reconstructions; keeping one end's generator instead
    would render the other end as a different face than its own reconstruction."""
    if start is None and end is None:
        return None
    names = list((start if start is not None else end).deltas)
    zero = TunedWeights.zeros(generator, 1, names)
    rows = [0] * len(t)
    a = (start if start is not None else zero).select(rows)
    b = (end if end is not None else zero).select(rows)
    return a.lerp(b, t)


def batched_synthesize(generator: CodeGenerator, weights: dict[str, torch.Tensor],
                       codes: torch.Tensor) -> torch.Tensor:
    """Images ``[B, K, 3, R, R]`` from codes ``[B, K, L, C]``, the codes of row b through the generator
    whose tunable parameters are ``weights[name][b]`` (full values, not deltas). Differentiable
    with respect to ``weights``; one vmapped forward for all B generators."""
    wrapper = _Synthesis(generator)

    def one(w: dict[str, torch.Tensor], c: torch.Tensor) -> torch.Tensor:
        return functional_call(wrapper, {f"generator.{k}": v for k, v in w.items()}, (c,))

    return vmap(one)(weights, codes)


def synthesize(generator: CodeGenerator, codes: torch.Tensor, *, batch_size: int = 8,
               callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Images ``[..., 3, R, R]`` in [-1, 1] from codes ``[..., L, C]`` (no truncation, fixed noise),
    on the generator's device; ``callback(n)`` after each batch of n images."""
    lead = codes.shape[:-2]
    flat = codes.reshape(-1, *codes.shape[-2:])
    device = generator.device
    chunks = []
    with frozen(generator), torch.no_grad():
        for batch in flat.split(batch_size):
            chunks.append(generator.synthesize(batch.to(device)))
            if callback is not None:
                callback(batch.shape[0])
    images = torch.cat(chunks) if chunks else torch.empty(0, 3, generator.resolution, generator.resolution)
    return images.reshape(*lead, *images.shape[1:])


def synthesize_tuned(generator: CodeGenerator, tuned: TunedWeights | None, codes: torch.Tensor, *,
                     batch_size: int = 8, callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Images ``[N, ..., 3, R, R]`` from codes ``[N, ..., L, C]``, image i's codes through image i's
    tuned generator (``tuned`` holds N rows); ``None`` renders everything with the base generator.
    At most about ``batch_size`` images per forward; ``callback(n)`` after each chunk."""
    if tuned is None:
        return synthesize(generator, codes, batch_size=batch_size, callback=callback)
    n = codes.shape[0]
    if len(tuned) != n:
        raise ValueError(f"{len(tuned)} tuned generators for {n} rows of codes")
    lead = codes.shape[1:-2]
    flat = codes.reshape(n, -1, *codes.shape[-2:]).to(generator.device)  # [N, K, L, C]
    k = flat.shape[1]
    per_chunk = max(1, batch_size // max(k, 1))  # images per forward
    per_image = min(k, batch_size) or 1  # codes per image per forward
    base = base_weights(generator, list(tuned.deltas))
    rows = []
    with torch.no_grad():
        for lo in range(0, n, per_chunk):
            weights = {name: base[name] + tuned.deltas[name][lo:lo + per_chunk].to(base[name])
                       for name in base}
            parts = []
            for c0 in range(0, k, per_image):
                chunk = flat[lo:lo + per_chunk, c0:c0 + per_image]
                parts.append(batched_synthesize(generator, weights, chunk))
                if callback is not None:
                    callback(chunk.shape[0] * chunk.shape[1])
            rows.append(torch.cat(parts, dim=1) if parts else flat.new_empty(0))
    images = torch.cat(rows)
    return images.reshape(n, *lead, *images.shape[2:])


# --- files ------------------------------------------------------------------------------------------

def save_tuned(path: str | os.PathLike, deltas: dict[str, torch.Tensor], *, base: str,
               half: bool = True) -> int:
    """Write one image's deltas (name → tensor, no leading N) as safetensors; tensors that are all
    zero are left out. ``base`` is ``fingerprint(generator)``. Returns the number of tensors written."""
    kept = {k: (v.half() if half else v.float()).cpu().contiguous() for k, v in deltas.items() if bool(v.ne(0).any())}
    metadata = {"format": TUNED_FORMAT, "format_version": str(TUNED_VERSION), "base": base,
                "dtype": "float16" if half else "float32", "content": "tuned minus base weights"}
    save_file(kept, str(path), metadata=metadata)
    return len(kept)


def load_tuned(paths: list[str | os.PathLike | None], generator: CodeGenerator) -> TunedWeights:
    """Deltas of N images from their files (``None``: an untuned image), checked against
    ``generator``: same fingerprint, known parameter names and shapes."""
    names = tunable_names(generator)
    base = base_weights(generator, names)
    expected = fingerprint(generator, names)
    tuned = TunedWeights.zeros(generator, len(paths), names)
    for i, path in enumerate(paths):
        if path is None:
            continue
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; the invert folder lists it as tuned weights")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
        version = meta.get("format_version", "0")
        if meta.get("format") != TUNED_FORMAT or not version.isdigit() or int(version) > TUNED_VERSION:
            raise CheckpointError(f"{path} is not an idinvert tuned-weights file (format {TUNED_FORMAT!r} "
                                  f"version ≤ {TUNED_VERSION}, got {str(meta.get('format'))[:40]!r} "
                                  f"version {version[:20]!r})")
        if meta.get("base") != expected:
            raise CheckpointError(f"{path} was tuned from another generator (fingerprint {meta.get('base')}, "
                                  f"this pack's is {expected}); use the pack it was made with")
        for k, v in state.items():
            if k not in base or tuple(v.shape) != tuple(base[k].shape):
                raise CheckpointError(f"{path}: {k[:80]} {list(v.shape)} is not a tunable parameter of this generator")
            if not v.is_floating_point() or not torch.isfinite(v).all():  # the file's fault, not the pack's
                raise CheckpointError(f"{path}: {k} holds NaN/inf or non-float values; the tuned weights are damaged "
                                      f"— run `idinvert invert --refine pti` again")
            tuned.deltas[k][i] = v.to(tuned.deltas[k])
    return tuned
