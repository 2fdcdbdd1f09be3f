"""Weights derived from frozen parameters, computed once per frozen block instead of every forward.

Equalized-learning-rate layers use ``W·c`` rather than the stored ``W``, and the fused up-convolution
turns a 3×3 kernel into a summed 4×4 one, at every forward pass. While an inversion optimises a code
through frozen networks these products never change, yet recomputing them costs a large share of a
step: the encoder's last dense layer alone is 117 M multiplications (and a fresh 470 MB buffer) per
step at 256 px. Inside ``remembering(*modules)`` (entered by ``frozen``) a layer computes
each derived weight once and reuses it, for as long as its sources are the same frozen parameters,
unchanged (same object, storage, dtype and version counter). Anything else is computed afresh as
before: parameters that require gradients (training), tensors substituted by ``functional_call``
(pivotal tuning), and every call outside the block. The remembered tensors are the exact values the
layer would compute, so results do not change.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

_CACHE = "_derived_weights"  # attribute of each module inside a remembering block: key → (sources, stamp, value)


def derived(module: nn.Module, key: str, make: Callable[[], torch.Tensor], *sources: torch.Tensor) -> torch.Tensor:
    """``make()``, remembered on ``module`` under ``key`` while every source is an unchanged frozen parameter."""
    cache = module.__dict__.get(_CACHE)
    if cache is None or torch.is_inference_mode_enabled() \
            or not all(isinstance(s, nn.Parameter) and not s.requires_grad for s in sources):
        return make()  # inference tensors could not be saved for a later backward pass
    stamp = tuple((s.data_ptr(), s.dtype, s.device, s._version) for s in sources)
    hit = cache.get(key)
    if hit is not None and len(hit[0]) == len(sources) and all(a is b for a, b in zip(hit[0], sources)) \
            and hit[1] == stamp:
        return hit[2]
    value = make()
    cache[key] = (sources, stamp, value)
    return value


@contextlib.contextmanager
def remembering(*modules: nn.Module | None) -> Iterator[None]:
    """Let the layers of ``modules`` remember derived weights inside the block (nested blocks share them)."""
    saved = []
    for m in modules:
        if m is None:
            continue
        for sub in m.modules():
            previous = sub.__dict__.get(_CACHE)
            saved.append((sub, previous))
            sub.__dict__[_CACHE] = {} if previous is None else previous
    try:
        yield
    finally:
        for sub, previous in reversed(saved):
            if previous is None:
                sub.__dict__.pop(_CACHE, None)
            else:
                sub.__dict__[_CACHE] = previous


@contextlib.contextmanager
def frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Eval mode and no parameter gradients inside the block; previous state restored after.

    Inside the block the layers also compute weights derived from their parameters once
    (``derived``, above), not at every forward pass.
    """
    saved = []
    for m in modules:
        if m is None:
            continue
        saved.append((m, m.training, [(p, p.requires_grad) for p in m.parameters()]))
        m.eval()
        m.requires_grad_(False)
    try:
        with remembering(*modules):
            yield
    finally:
        for m, training, flags in saved:
            m.train(training)
            for p, flag in flags:
                p.requires_grad_(flag)
