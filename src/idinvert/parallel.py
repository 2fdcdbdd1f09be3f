"""Running as one of several processes: ``torchrun``'s process group, the device, agreeing across processes.

``torchrun --nproc_per_node=K`` starts K processes (one per GPU with NCCL, or CPU processes with gloo);
``init_distributed`` joins the group it describes, and one process alone is a ``Distributed()`` of
world size 1, for which every collective below does nothing. Data-parallel training averages the
gradients of every update (``all_reduce_gradients``); data-set inversion deals batches out by rank.
``StopRequest`` turns Ctrl-C and SIGTERM into a flag, so that a loop ends after its current step and
``distributed_any`` lets every process stop together.
"""

from __future__ import annotations

import atexit
import os
import signal
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn


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


def broadcast_object(value: Any, world: Distributed) -> Any:
    """The first process's ``value`` (any picklable object) on every process."""
    if world.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def distributed_any(flag: bool, world: Distributed) -> bool:
    """True on every rank if any rank's flag is set (so all ranks stop together)."""
    if world.world_size == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=world.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


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
