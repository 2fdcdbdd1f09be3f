"""What every training run shares: the update step, checkpoints, EMA, R1, progress.

Data parallelism: ``torchrun --nproc_per_node=K`` starts K processes; each computes the
loss on its slice of the global batch and the gradients are averaged with an all-reduce
(NCCL on GPUs, gloo on CPU, ``parallel.all_reduce_gradients``) in every ``update``, which is what
PyTorch's DistributedDataParallel does, written out so that networks whose used layers change with
the progressive-growing level need no "unused parameter" bookkeeping. Every random draw (data
order, flips, latents) comes from the global step, so K processes reproduce one process
training on the same global batch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ..errors import CheckpointError, NonFiniteError
from ..fileio import atomic_path
from ..formats.common import read_torch_file
from ..parallel import Distributed, all_reduce_gradients


def r1_penalty(real_scores: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
    """R1: ``mean_N ‖∇_x D(x)‖²`` on real images (``reals`` must require grad; differentiable)."""
    (grad,) = torch.autograd.grad(real_scores.sum(), reals, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean()


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """``ema ← β·ema + (1 − β)·model`` for parameters; buffers are copied."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1.0 - beta)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


def ema_beta(batch: int, half_life_kimg: float) -> float:
    return 0.5 ** (batch / max(half_life_kimg * 1000.0, 1e-8))


GAN_STATE = ("G", "D", "Gs", "opt_G", "opt_D")  # what every GAN trainer checkpoints besides its counters


def trainer_state(trainer, keys: Iterable[str]) -> dict:
    """A trainer's networks and optimisers named ``keys`` (each ``state_dict()``) and its counters, for
    its checkpoint (``GAN_STATE`` for the GAN trainers)."""
    return {key: getattr(trainer, key).state_dict() for key in keys} | {
        "images_seen": trainer.images_seen, "step_index": trainer.step_index}


def load_trainer_state(trainer, state: dict, keys: Iterable[str]) -> None:
    """The inverse of ``trainer_state``."""
    for key in keys:
        getattr(trainer, key).load_state_dict(state[key])
    trainer.images_seen = int(state["images_seen"])
    trainer.step_index = int(state["step_index"])


def check_finite(losses: dict[str, torch.Tensor], step: int) -> None:
    bad = [k for k, v in losses.items() if not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteError(f"training diverged at step {step}: {', '.join(bad)} became NaN/inf; "
                             f"nothing was saved from this step — resume from the last checkpoint with a lower lr")


def update(optimizer: torch.optim.Optimizer, parameters: Iterable[nn.Parameter], loss: torch.Tensor,
           losses: dict[str, torch.Tensor], step: int, world: Distributed) -> None:
    """One optimiser update of every trainer: refuse NaN/inf ``losses`` (nothing is changed then),
    clear the gradients, backpropagate ``loss``, average the gradients over processes, step."""
    check_finite(losses, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    all_reduce_gradients(parameters, world)
    optimizer.step()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A run's ``checkpoint.pt`` through the one bounded torch reader (``formats.common.read_torch_file``)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from")
    state = read_torch_file(path, kind="checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("trainer"), dict):
        raise CheckpointError(f"{path}: not an idinvert training checkpoint (no 'trainer' state); start a new "
                              f"run folder")
    return state


MAX_IMAGES_SEEN = 10**13  # counters beyond any run: a checkpoint claiming more is damaged


def restore_trainer(trainer, state: Any, source: str) -> None:
    """``trainer.load_state_dict(state)`` for a checkpoint from a file: anything that does not fit this run
    (missing parts, other shapes, optimiser states of other sizes, NaN weights, odd counters) is one
    ``CheckpointError`` line instead of a traceback now or a crash at the first step."""
    hint = "; resume with the settings the run was started with, or start a new run folder"
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: the trainer state is a {type(state).__name__}{hint}")
    try:
        trainer.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError) as exc:
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(f"{source} does not fit this run ({type(exc).__name__}: {text}){hint}") from None
    for name, value in vars(trainer).items():
        if isinstance(value, nn.Module):
            broken = [k for k, v in value.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
            if broken:
                raise CheckpointError(f"{source}: {name} holds NaN/inf values ({', '.join(broken[:3])}); the run "
                                      f"diverged or the file is damaged — start a new run folder")
        elif isinstance(value, torch.optim.Optimizer):
            for group in value.param_groups:
                for p in group["params"]:
                    for key, v in value.state.get(p, {}).items():
                        if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape != p.shape:
                            raise CheckpointError(f"{source}: the {name} state {key} has shape {list(v.shape)} for a "
                                                  f"parameter of shape {list(p.shape)}{hint}")
    for counter in ("images_seen", "step_index"):
        value = getattr(trainer, counter, 0)
        if not 0 <= value <= MAX_IMAGES_SEEN:
            raise CheckpointError(f"{source}: {counter} = {value} is not a count of this run; the file is damaged")


class Throughput:
    """Images per second over the recent past (exponential average)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.rate = math.nan

    def update(self, images: int) -> float:
        now = time.perf_counter()
        current = images / max(now - self.last, 1e-9)
        self.last = now
        self.rate = current if math.isnan(self.rate) else 0.9 * self.rate + 0.1 * current
        return self.rate
