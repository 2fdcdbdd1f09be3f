"""The long-run driver shared by every trainer: checkpoint, resume, snapshots, progress, stop.

A run folder holds ``checkpoint.pt`` (written atomically every ``checkpoint_minutes``, at each
snapshot, at the end and on Ctrl-C/SIGTERM), ``train_config.json``, ``log.jsonl`` (losses and
throughput) and ``samples/*.png`` (a grid per snapshot). ``resume=True`` continues exactly:
the networks, optimisers, EMA state and the data cursor come back from the checkpoint, and
all random draws are functions of the step, so the continuation equals an uninterrupted run.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from tqdm import tqdm

from ..errors import CheckpointError
from ..fileio import write_json
from ..parallel import Distributed, StopRequest, distributed_any
from ..safety import claim_output_dir, mark_output_dir, read_json
from .common import Throughput, load_checkpoint, restore_trainer, save_checkpoint


class Trainer(Protocol):
    images_seen: int
    step_index: int

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class RunOptions:
    run_dir: Path
    total_images: int
    resume: bool = False
    checkpoint_minutes: float = 10.0
    snapshot_images: int = 50_000  # a sample grid (and a checkpoint) every this many images
    log_every: int = 20  # steps between log lines
    max_minutes: float | None = None  # stop (with a checkpoint) after this much wall time
    quiet: bool = False


@dataclass
class RunOutcome:
    finished: bool  # reached total_images
    interrupted: bool  # stopped early, by a signal or max_minutes
    by_signal: bool  # stopped by Ctrl-C / SIGTERM
    images_seen: int
    seconds: float
    exit_status: int = 0  # for the command line: 130 after Ctrl-C, 143 after SIGTERM, else 0


def _inputs(config: dict) -> list[str]:
    """The folders a run reads (its data sets, base pack or teacher), which its run folder must not be."""
    values = [config.get(key) for key in ("data", "pack", "teacher")]
    return [v for value in values for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]


def _check_run_dir(options: RunOptions, config: dict) -> None:
    """The output-folder rule (``safety.claim_output_dir``: new, empty or idinvert's own, never an input),
    then: a folder with a checkpoint only with --resume, and --resume only with the same settings."""
    ckpt = options.run_dir / "checkpoint.pt"
    saved = options.run_dir / "train_config.json"
    claim_output_dir(options.run_dir, inputs=_inputs(config), what="--run-dir")
    if ckpt.exists() and not options.resume:
        raise CheckpointError(f"{options.run_dir} already holds a run; pass --resume to continue it "
                              f"or choose another run folder")
    if options.resume and saved.is_file():
        old = read_json(saved, error=CheckpointError)
        if not isinstance(old, dict):
            raise CheckpointError(f"{saved} is not a run's settings (a {type(old).__name__}); start a new run folder")
        ignore = {"total_kimg"}
        diff = sorted(k for k in set(old) | set(config) if k not in ignore and old.get(k) != config.get(k))
        if diff:
            raise CheckpointError(f"{options.run_dir} was started with other settings ({', '.join(diff)}); "
                                  f"resume with the same settings or start a new run folder")


def run_training(trainer: Trainer, step: Callable[[], dict[str, float]], options: RunOptions, *,
                 config: dict[str, Any], world: Distributed,
                 snapshot: Callable[[Path], None] | None = None) -> RunOutcome:
    """Call ``step()`` until ``trainer.images_seen`` reaches the total, checkpointing as it goes.

    The run folder follows the output-folder rule (new, empty or idinvert's own, never an input) and is
    marked as idinvert's before anything else is written into it."""
    if world.is_main:
        _check_run_dir(options, config)
    options.run_dir.mkdir(parents=True, exist_ok=True)
    if world.is_main:
        mark_output_dir(options.run_dir)
    ckpt_path = options.run_dir / "checkpoint.pt"
    if options.resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        restore_trainer(trainer, state["trainer"], str(ckpt_path))
        seconds = state.get("seconds", 0.0)
        elapsed = float(seconds) if isinstance(seconds, (int, float)) and 0 <= seconds < 1e12 else 0.0
    elif options.resume:
        raise CheckpointError(f"{ckpt_path}: no checkpoint to resume from")
    else:
        elapsed = 0.0
    if world.is_main:
        write_json(options.run_dir / "train_config.json", config)

    def checkpoint() -> None:
        if world.is_main:
            save_checkpoint(ckpt_path, {"trainer": trainer.state_dict(), "seconds": elapsed,
                                        "config": json.dumps(config)})

    start = time.perf_counter()  # reset at each checkpoint: the run's total wall time accumulates in elapsed
    last_ckpt = chunk_start = start  # chunk_start: what --max-minutes counts from
    next_snapshot = (trainer.images_seen // options.snapshot_images + 1) * options.snapshot_images
    rate = Throughput()
    bar = tqdm(total=options.total_images, initial=trainer.images_seen, unit="img", unit_scale=True,
               disable=options.quiet or not world.is_main, dynamic_ncols=True)
    interrupted = by_signal = False
    log_file = options.run_dir / "log.jsonl"
    with StopRequest() as stop:
        while trainer.images_seen < options.total_images:
            before = trainer.images_seen
            losses = step()
            images = trainer.images_seen - before
            speed = rate.update(images)
            elapsed_now = elapsed + time.perf_counter() - start
            bar.update(images)
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()} | {"img/s": f"{speed:.1f}"}, refresh=False)
            if world.is_main and (trainer.step_index % options.log_every == 0 or trainer.step_index == 1):
                with open(log_file, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": trainer.step_index, "images": trainer.images_seen,
                                        "seconds": round(elapsed_now, 1), "img_per_s": round(speed, 2),
                                        **{k: round(v, 5) for k, v in losses.items()}}) + "\n")
            out_of_time = options.max_minutes is not None and \
                time.perf_counter() - chunk_start > options.max_minutes * 60
            if distributed_any(stop.requested or out_of_time, world):
                interrupted, by_signal = True, stop.requested
                break
            if trainer.images_seen >= next_snapshot:
                next_snapshot += options.snapshot_images
                if snapshot is not None and world.is_main:
                    snapshot(options.run_dir / "samples" / f"{trainer.images_seen:09d}.png")
                elapsed, start = elapsed_now, time.perf_counter()
                checkpoint()
                last_ckpt = time.perf_counter()
            elif time.perf_counter() - last_ckpt > options.checkpoint_minutes * 60:
                elapsed, start = elapsed_now, time.perf_counter()
                checkpoint()
                last_ckpt = time.perf_counter()
    bar.close()
    elapsed += time.perf_counter() - start
    checkpoint()
    finished = trainer.images_seen >= options.total_images
    if finished and snapshot is not None and world.is_main:
        snapshot(options.run_dir / "samples" / f"{trainer.images_seen:09d}.png")
    status = 128 + (stop.signum or signal.SIGTERM) if by_signal else 0  # another process's signal: SIGTERM
    return RunOutcome(finished=finished, interrupted=interrupted, by_signal=by_signal,
                      images_seen=trainer.images_seen, seconds=elapsed, exit_status=int(status))
