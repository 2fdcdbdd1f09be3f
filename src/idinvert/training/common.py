"""What every training run shares: data parallelism, checkpoints, stopping, EMA, progress.

Data parallelism: ``torchrun --nproc_per_node=K`` starts K processes; each computes the
loss on its slice of the global batch and the gradients are averaged with an all-reduce
(NCCL on GPUs, gloo on CPU) before every optimiser step, which is what PyTorch's
DistributedDataParallel does, written out so that networks whose used layers change with the
progressive-growing level need no "unused parameter" bookkeeping. Every random draw (data
order, flips, latents) comes from the global step, so K processes reproduce one process
training on the same global batch.
"""

from __future__ import annotations

import atexit
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn

from ..errors import CheckpointError, NonFiniteError
from ..fileio import atomic_path
from ..formats.common import read_torch_file


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_slice(self, global_batch: int) -> slice:
        if global_batch % self.world_size:
            raise ValueError(f"batch size {global_batch} is not divisible by {self.world_size} processes")
        per = global_batch // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def init_distributed(device: str | torch.device | None = "auto") -> Distributed:
    """Join the process group that ``torchrun`` describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device)
    if world <= 1:
        return Distributed(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # Without an explicit teardown, gloo's worker threads can still be joinable when the
        # interpreter exits, and the process aborts ("terminate called without an active exception").
        atexit.register(_leave_process_group)
    return Distributed(rank=rank, world_size=world, device=device)


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_gradients(parameters: Iterable[nn.Parameter], world: Distributed) -> None:
    """Average ``.grad`` over processes (parameters without a gradient are skipped on all ranks)."""
    if world.world_size == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_state(module: nn.Module, world: Distributed) -> None:
    if world.world_size > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def global_mean(value: torch.Tensor, world: Distributed) -> torch.Tensor:
    """A per-process mean averaged over processes (equal slices: the global-batch mean)."""
    if world.world_size == 1:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / world.world_size


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


def gan_state(trainer) -> dict:
    """A GAN trainer's networks, optimisers and counters, for its checkpoint."""
    return {key: getattr(trainer, key).state_dict() for key in GAN_STATE} | {
        "images_seen": trainer.images_seen, "step_index": trainer.step_index}


def load_gan_state(trainer, state: dict) -> None:
    """The inverse of ``gan_state``."""
    for key in GAN_STATE:
        getattr(trainer, key).load_state_dict(state[key])
    trainer.images_seen = int(state["images_seen"])
    trainer.step_index = int(state["step_index"])


def check_finite(losses: dict[str, torch.Tensor], step: int) -> None:
    bad = [k for k, v in losses.items() if not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteError(f"training diverged at step {step}: {', '.join(bad)} became NaN/inf; "
                             f"nothing was saved from this step — resume from the last checkpoint with a lower lr")


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


class StopRequest:
    """SIGINT/SIGTERM set a flag so that the loop can checkpoint and exit; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None  # the signal that asked to stop (the exit status is 128 + it)
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = self.signum or signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


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


def distributed_any(flag: bool, world: Distributed) -> bool:
    """True on every rank if any rank's flag is set (so all ranks stop together)."""
    if world.world_size == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=world.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)
