"""Inverting a whole data set: streamed, resumable, sharded over processes and machines.

``invert_dataset`` inverts a list of image files batch by batch. A background thread decodes
the next batches while the current one is optimised (``Prefetcher``: at most ``ahead`` batches
wait, so memory stays flat whatever the number of images), and every finished batch is written
at once, atomically, as one shard of a work folder beside the output, ``.<out>.partial/``:

    settings.json            every setting that changes the codes (model weights, inversion, seed, images)
    shards/<first>.npz       per batch: keys, names, codes, encoder codes, final losses, steps run
    <name>_{ori,enc,inv}.png unless images are off, written before the batch's shard

A run that stops (Ctrl-C, SIGTERM, a kill, a crash, an unreadable image) keeps every shard; the
same command resumes and inverts only the images without one, and refuses when the settings
differ. An image is "the same" when its resolved path, output name and size are. When every
image has a shard, the first process assembles ``codes.npy`` ``[N, L, C]`` (written through a
memory map, rows in input order), ``encoder_codes.npy``, ``manifest.json`` and the contact sheet (an
invert folder, ``engine.invert_folder``), moves everything into the output folder and removes the
work folder.

Under ``torchrun`` the pending batches are dealt out round-robin over the processes (one per GPU
with NCCL, or CPU processes with gloo; several machines need a shared file system for the output);
each writes its own shards. The codes do not depend on how the images are split: every image's
starting point depends only on the image (E(x), the mean code, or N(0, 1) seeded by the seed and
the image's position in the input list) and images do not interact within a batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .. import errors, safety
from ..errors import ConfigError, IdinvertError
from ..fileio import StagedOutput, atomic_path, write_json
from ..images import read_image, save_image
from ..parallel import Distributed, StopRequest, broadcast_object, distributed_any
from ..report import environment
from ..safety import read_json
from .inversion import InversionConfig, invert
from .invert_folder import MANIFEST, code_arrays, image_file, write_manifest, write_report

SETTINGS_VERSION = 1
MAX_SETTINGS_BYTES = 1024 * 1024  # settings.json: a few hundred bytes
MAX_SHARD_BYTES = 1024**3  # one batch's arrays (keys, codes, losses)


class Prefetcher:
    """Decode batches in a background thread, at most ``ahead`` batches ahead of the consumer.

    Iterating yields ``(indices, images)`` in order. An error raised while decoding is raised in
    the consumer when it reaches that batch. Batches alive at any moment: the one being consumed,
    the ``ahead`` queued ones and the one the thread is decoding or waiting to queue — provided
    the consumer drops each batch before asking for the next.
    """

    def __init__(self, batches: Sequence[Sequence[int]], load: Callable[[Sequence[int]], torch.Tensor],
                 *, ahead: int = 2) -> None:
        if ahead < 1:
            raise ValueError("ahead must be at least 1")
        self._batches, self._load = list(batches), load
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="idinvert-prefetch", daemon=True)

    def _work(self) -> None:
        for indices in self._batches:
            if self._stop.is_set():
                return
            try:
                item = (indices, self._load(indices))
            except BaseException as exc:  # handed to the consumer, raised there
                item = (indices, exc)
            if not self._put(item) or isinstance(item[1], BaseException):
                return
            del item
        self._put(None)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[tuple[list[int], torch.Tensor]]:
        self._thread.start()
        while True:
            item = self._queue.get()
            if item is None:
                return
            indices, images = item
            del item
            if isinstance(images, BaseException):
                raise images
            yield indices, images
            del images

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a waiting put and drop the queued batches
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive():
            self._thread.join(timeout=10)


@dataclass(frozen=True)
class DatasetJob:
    """One data-set inversion: the inputs, where it goes and how it is run."""

    sources: list[Path]  # image files, in input order
    names: list[str]  # unique output names, one per source
    out: Path  # the output folder
    config: InversionConfig  # with lambda_vgg resolved
    seed: int = 0  # seed of random starting codes
    batch_size: int = 1  # images optimised together (does not change the codes)
    images: bool = True  # write <name>_{ori,enc,inv}.png, sheet.png and index.html
    resume: bool = False  # insist on continuing earlier work
    ahead: int = 2  # batches decoded ahead of the optimisation

    @property
    def work(self) -> Path:
        """``.<out>.partial`` beside the output; for names over 200 characters, their first 100 and a
        digest, so that the work folder's name stays under the file systems' 255 bytes."""
        out = self.out.resolve()
        name = out.name
        if len(name.encode()) > 200:
            name = f"{name[:100]}-{hashlib.sha1(name.encode()).hexdigest()[:12]}"
        return out.parent / f".{name}.partial"


@dataclass
class DatasetOutcome:
    total: int  # images in the job
    skipped: int  # finished before this run started
    inverted: int  # inverted by this process in this run
    finished: bool  # every image is done (and, on the first process, the output is written)
    stopped: bool = False  # a stop request ended the run early
    seconds: float = 0.0
    exit_status: int = 0  # for the command line when stopped: 130 after Ctrl-C, 143 after SIGTERM
    manifest: dict = field(default_factory=dict)


def weights_digest(pack) -> str:
    """A digest of every tensor of the networks inversion uses (a changed pack changes the codes)."""
    h = hashlib.blake2b(digest_size=16)
    for key in ("generator", "encoder", "conventional_encoder", "perceptual"):
        net = getattr(pack, key, None)
        if net is None:
            continue
        for name, t in net.state_dict().items():
            h.update(f"{key}.{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def job_settings(job: DatasetJob, pack, model: dict) -> dict:
    """Everything that changes the results; resuming requires it unchanged. Batch size and the
    number of processes are left out: they do not change the codes."""
    identity = {k: v for k, v in model.items() if k != "path"}  # the same pack may be reached by other paths
    return {"version": SETTINGS_VERSION, "model": {**identity, "weights": weights_digest(pack)},
            "inversion": asdict(job.config), "seed": job.seed, "images": job.images}


def image_keys(sources: Sequence[Path], names: Sequence[str]) -> list[str]:
    """What identifies a finished image: resolved path, output name and file size."""
    keys = []
    for path, name in zip(sources, names):
        try:
            size = path.stat().st_size
        except OSError:
            size = -1  # reported when the image is decoded
        keys.append(f"{path.resolve()}\t{name}\t{size}")
    return keys


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} {a!r} → {b!r}")
    return out


# --- the work folder ------------------------------------------------------------------------------

class ShardFolder:
    """The work folder: settings, one ``.npz`` shard per finished batch, the batches' PNGs."""

    def __init__(self, path: Path, settings: dict, code_shape: tuple[int, int] | None = None) -> None:
        self.path, self.settings, self.code_shape = path, settings, code_shape
        self.shards = path / "shards"

    def check_not_linked(self) -> None:
        """The work folder and its shards/ are real folders: a symbolic link would send the writes (and
        the files left behind) wherever it points."""
        for folder in (self.path, self.shards):
            if folder.is_symlink():
                raise ConfigError(f"{folder} is a symbolic link; idinvert keeps its work in a real folder: remove "
                                  f"the link or choose another --out")

    def exists(self) -> bool:
        return (self.path / "settings.json").is_file()

    def stored_settings(self) -> dict | None:
        try:
            stored = read_json(self.path / "settings.json", max_bytes=MAX_SETTINGS_BYTES)
        except IdinvertError:  # unreadable, too large or nested too deeply
            return None
        return stored if isinstance(stored, dict) else None

    def check_settings(self) -> None:
        stored = self.stored_settings()
        if stored is None:
            raise ConfigError(f"{self.path}: unfinished work without a readable settings.json; delete that "
                              f"folder or choose another --out")
        if stored != self.settings:
            changed = "; ".join(_differences(stored, self.settings)[:4])
            raise ConfigError(f"{self.path} holds unfinished work with other settings ({changed}); rerun with "
                              f"the same settings to continue it, or delete that folder or choose another --out")

    def create(self) -> None:
        """Make the folder and its settings (every process may do it; the content is the same)."""
        self.shards.mkdir(parents=True, exist_ok=True)
        if not self.exists():
            write_json(self.path / "settings.json", self.settings)

    def shard_files(self) -> list[Path]:
        return sorted(self.shards.glob("*.npz")) if self.shards.is_dir() else []

    def read(self, shard: Path) -> dict[str, np.ndarray] | None:
        """A shard's arrays when it is whole and fits this run, else None. Shards are written atomically,
        so a damaged one was changed by hand (truncated, emptied, other shapes or types, NaN codes, a
        header claiming gigabytes): its images are inverted again rather than published."""
        try:
            arrays = safety.load_npz(shard, max_bytes=MAX_SHARD_BYTES)
        except IdinvertError:
            return None
        keys = arrays.get("keys")
        if keys is None or keys.dtype.kind != "U" or keys.ndim != 1 or not len(keys):
            return None
        b = len(keys)
        shape = (b, *self.code_shape) if self.code_shape is not None else None
        for name in ("codes", "encoder_codes"):
            a = arrays.get(name)
            if a is None and name == "encoder_codes":
                continue
            if a is None or a.dtype.kind != "f" or a.ndim != 3 or len(a) != b or (shape and a.shape != shape) \
                    or not np.isfinite(a).all():
                return None
        steps, seconds = arrays.get("steps_run"), arrays.get("seconds")
        if steps is None or steps.dtype.kind not in "iu" or steps.shape != (b,) or (steps < 0).any():
            return None
        if seconds is None or seconds.dtype.kind != "f" or seconds.shape != () or not 0 <= seconds < 1e9:
            return None
        if any(k.startswith("loss_") and (v.dtype.kind != "f" or v.shape != (b,)) for k, v in arrays.items()):
            return None
        return arrays

    def finished(self) -> dict[str, tuple[Path, int]]:
        """key → (shard, row) for every image with a whole shard (``read``)."""
        done = {}
        for shard in self.shard_files():
            arrays = self.read(shard)
            if arrays is None:
                continue
            for row, key in enumerate(arrays["keys"].tolist()):
                done[key] = (shard, row)
        return done

    def write(self, first: int, arrays: dict[str, np.ndarray]) -> None:
        with atomic_path(self.shards / f"{first:09d}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)


# --- the run --------------------------------------------------------------------------------------

def plan(pending: Sequence[int], batch_size: int, world: Distributed) -> list[list[int]]:
    """This process's batches: the pending images in input order, cut into batches, dealt round-robin."""
    batches = [list(pending[i:i + batch_size]) for i in range(0, len(pending), batch_size)]
    return batches[world.rank::world.world_size]


def random_starts(indices: Sequence[int], code_shape: tuple[int, int], seed: int) -> torch.Tensor:
    """N(0, 1) starting codes ``[n, L, C]``, each seeded by the seed and the image's input position."""
    return torch.stack([torch.randn(code_shape, generator=torch.Generator().manual_seed(
        (seed * 1_000_003 + i) % (2 ** 63))) for i in indices])


def invert_dataset(pack, job: DatasetJob, *, model: dict, world: Distributed = Distributed(),
                   progress: Callable[[int, int], object] | None = None,
                   log: Callable[[str], None] = lambda message: None,
                   load: Callable[[Sequence[int]], torch.Tensor] | None = None,
                   stop: Callable[[], bool] | None = None) -> DatasetOutcome:
    """Invert ``job.sources`` into ``job.out`` (see the module docstring).

    ``model`` identifies the pack in the manifest; ``progress(done, total)`` returns a bar with
    ``update(n)`` (tqdm); ``load(indices)`` decodes a batch (default: the files at the pack's
    resolution); ``stop()`` ends the run after the current batch when true (tests), as Ctrl-C does.
    """
    if job.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    n = len(job.sources)
    keys = image_keys(job.sources, job.names)
    settings = json.loads(json.dumps(job_settings(job, pack, model)))  # as stored: tuples become lists
    work = ShardFolder(job.work, settings, pack.code_shape)
    finished = _start(job, work, keys, world)
    if finished is None:  # the output folder already holds this exact run
        log(f"{job.out} already holds these {n} images inverted with these settings; nothing to do")
        return DatasetOutcome(total=n, skipped=n, inverted=0, finished=True)
    pending = [i for i, key in enumerate(keys) if key not in finished]
    if finished:
        log(f"resuming: {n - len(pending)} of {n} images are finished, {len(pending)} to go")
    mine = plan(pending, job.batch_size, world)
    load = load or (lambda indices: torch.stack([read_image(job.sources[i], pack.resolution) for i in indices]))
    start = time.perf_counter()
    inverted, stopped = 0, False
    bar = Progress(progress(n - len(pending), n), n - len(pending), n, world.world_size) if progress else None
    loader = Prefetcher(mine, load, ahead=job.ahead)
    try:
        with StopRequest() as signals:
            for indices, images in loader:
                _invert_and_write(pack, job, work, keys, indices, images, bar)
                del images
                inverted += len(indices)
                if signals.requested or (stop is not None and stop()):
                    stopped = True
                    break
    except IdinvertError as exc:
        raise type(exc)(f"{exc}{_kept_note(job, work)}") from None
    finally:
        loader.close()
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    stopped = distributed_any(stopped, world)  # also waits until every process has finished its batches
    outcome = DatasetOutcome(total=n, skipped=n - len(pending), inverted=inverted, finished=not stopped,
                             stopped=stopped, seconds=seconds,
                             exit_status=128 + (signals.signum or signal.SIGTERM) if stopped else 0)
    if not stopped and world.is_main:
        outcome.manifest = _assemble(pack, job, work, keys, model, world.world_size)
    return outcome


def _kept_note(job: DatasetJob, work: ShardFolder) -> str:
    done = sum(1 for _ in work.finished()) if work.exists() else 0
    if not done:
        return ""
    return (f" ({done} finished image(s) are kept in {work.path}: fix the cause and run the same command "
            f"again to continue)")


def _start(job: DatasetJob, work: ShardFolder, keys: list[str], world: Distributed) -> dict | None:
    """Check the settings against earlier work and find what is finished (the same answer on every
    process: the first decides and tells the others). None: the output already holds this run."""
    answer = None
    if world.is_main:
        try:
            answer = ("ok", _finished_before(job, work, keys))
        except IdinvertError as exc:
            answer = ("error", type(exc).__name__, str(exc))
    answer = broadcast_object(answer, world)
    if answer[0] == "error":
        raise getattr(errors, answer[1], ConfigError)(answer[2])
    return answer[1]


def _finished_before(job: DatasetJob, work: ShardFolder, keys: list[str]) -> dict | None:
    work.check_not_linked()
    if work.exists():
        work.check_settings()
        return work.finished()
    manifest = _read_manifest(job.out)
    if manifest.get("settings_fingerprint") is not None:
        same_settings = manifest["settings_fingerprint"] == work.settings
        if same_settings and manifest.get("keys") == keys:
            return None
        if job.resume:
            what = "settings" if not same_settings else "input images"
            raise ConfigError(f"{job.out} holds a finished inversion with other {what}; nothing to resume: "
                              f"run without --resume to replace it, or choose another --out")
    elif job.resume:
        raise ConfigError(f"--resume: neither {work.path} nor {job.out} holds earlier work to continue; "
                          f"run without --resume")
    return {}


def _read_manifest(folder: Path) -> dict:
    try:
        manifest = read_json(folder / MANIFEST) if (folder / MANIFEST).is_file() else {}
    except IdinvertError:  # unreadable or nested too deeply: not this run's
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _invert_and_write(pack, job: DatasetJob, work: ShardFolder, keys: list[str], indices: list[int],
                      images: torch.Tensor, bar) -> None:
    config, size = job.config, len(indices)
    init = random_starts(indices, pack.code_shape, job.seed) if config.initialisation == "random" else None
    steps = config.steps if config.optimises else 0

    def on_step(batch, step, losses):  # fractions of the batch, so that slow models show progress
        if bar is not None and step < steps:
            bar.show(size * step / steps)

    result = invert(images, pack, config, batch_size=size, init_codes=init, callback=on_step)
    work.create()
    if job.images:
        for row, i in enumerate(indices):
            name = job.names[i]
            save_image(images[row], work.path / image_file(name, "ori"))
            if result.encoder_reconstructions is not None:
                save_image(result.encoder_reconstructions[row], work.path / image_file(name, "enc"))
            save_image(result.reconstructions[row], work.path / image_file(name, "inv"))
    arrays = {"keys": np.array([keys[i] for i in indices]), "indices": np.array(indices, dtype=np.int64),
              "codes": result.codes.float().cpu().numpy(), "steps_run": result.steps_run.numpy(),
              "seconds": np.array(result.seconds)}
    if result.encoder_codes is not None:
        arrays["encoder_codes"] = result.encoder_codes.float().cpu().numpy()
    for term, values in result.losses.items():
        last = (result.steps_run - 1).clamp(min=0)
        arrays[f"loss_{term}"] = values[last, torch.arange(size)].numpy()
    work.write(indices[0], arrays)
    if bar is not None:
        bar.finished(size)


class Progress:
    """Feeds a tqdm-like bar (``update``, ``close``) with images done: whole images as batches are
    written, fractions while one runs. Under torchrun, the first process's bar counts its own
    images times the number of processes (they progress alike)."""

    def __init__(self, bar, done: int, total: int, scale: int = 1) -> None:
        self.bar, self.done, self.total, self.scale = bar, float(done), float(total), scale
        self.shown = float(done)

    def show(self, running: float) -> None:
        self._set(self.done + self.scale * running)

    def finished(self, size: int) -> None:
        self.done = min(self.total, self.done + self.scale * size)
        self._set(self.done)

    def _set(self, value: float) -> None:
        value = min(value, self.total)
        if value > self.shown:
            self.bar.update(value - self.shown)
            self.shown = value
            if hasattr(self.bar, "n"):  # tqdm: exactly the count, not a sum of fractions (no rounding drift)
                self.bar.n = value

    def close(self) -> None:
        self.bar.close()


# --- assembling the output ------------------------------------------------------------------------

def _assemble(pack, job: DatasetJob, work: ShardFolder, keys: list[str], model: dict, processes: int) -> dict:
    """codes.npy and the rest from the shards, published into the output folder like every verb's
    output (``StagedOutput``); the work folder is removed only once that succeeded."""
    where = work.finished()
    missing = [job.names[i] for i, key in enumerate(keys) if key not in where]
    if missing:
        raise IdinvertError(f"{len(missing)} image(s) have no shard in {work.path} (e.g. {missing[0]}); "
                            f"run the same command again to invert them")
    with StagedOutput(job.out, inputs=job.sources) as stage:
        manifest = _write_codes(pack, job, work, keys, model, where, stage.path, processes)
        if job.images:
            for name in job.names:  # linked, not moved: a failed publish leaves the work folder whole
                for kind in ("ori", "enc", "inv"):
                    made = work.path / image_file(name, kind)
                    if made.is_file() and not made.is_symlink():  # a link would publish what it points to
                        _link(work.path / image_file(name, kind), stage.path / image_file(name, kind))
            write_report(stage.path, job.names)
    shutil.rmtree(work.path, ignore_errors=True)
    return manifest


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, dst)


def _write_codes(pack, job: DatasetJob, work: ShardFolder, keys: list[str], model: dict,
                 where: dict[str, tuple[Path, int]], folder: Path, processes: int) -> dict:
    """codes.npy (and encoder_codes.npy) written row by row through a memory map, and the manifest."""
    n, (layers, width) = len(keys), pack.code_shape
    rows_of: dict[Path, list[tuple[int, int]]] = {}
    for i, key in enumerate(keys):
        shard, row = where[key]
        rows_of.setdefault(shard, []).append((i, row))
    shards = {}
    for shard in rows_of:  # checked again: a shard changed since it was counted is not published
        shards[shard] = work.read(shard)
        if shards[shard] is None:
            raise IdinvertError(f"{shard} is damaged or was changed; delete it and run the same command again")
    kinds = [k for k in ("codes", "encoder_codes") if k in shards[next(iter(rows_of))]]  # all shards or none
    maps = code_arrays(folder, kinds, n, (layers, width))
    losses: list[dict] = [{} for _ in range(n)]
    steps_run, seconds = [0] * n, 0.0
    for shard, pairs in rows_of.items():
        arrays = shards.pop(shard)
        seconds += float(arrays["seconds"]) * len(pairs) / len(arrays["keys"])
        for i, row in pairs:
            for k, m in maps.items():
                if k not in arrays:
                    raise IdinvertError(f"{shard}: no {k}; delete {work.path} and run again")
                m[i] = arrays[k][row]
            steps_run[i] = int(arrays["steps_run"][row])
            losses[i] = {k[5:]: float(arrays[k][row]) for k in arrays if k.startswith("loss_")} \
                if steps_run[i] > 0 else {}
    for m in maps.values():
        m.flush()
    del maps
    manifest = {
        "verb": "invert", "names": job.names, "inputs": [str(p) for p in job.sources], "model": model,
        "settings": asdict(job.config), "seed": job.seed, "code_shape": [n, layers, width],
        "losses": losses, "steps_run": steps_run, "seconds": round(seconds, 3),
        "seconds_per_image": round(seconds / max(n, 1), 3), "images": job.images,
        "environment": environment(pack.device), "run": {"processes": processes, "batch_size": job.batch_size},
        "settings_fingerprint": work.settings, "keys": keys,
    }
    write_manifest(folder, manifest)
    return manifest


def resolve_lambda_vgg(config: InversionConfig, pack) -> InversionConfig:
    """The config with λ_vgg resolved (``pack.lambda_vgg``): what the settings record and a resume compares."""
    return replace(config, lambda_vgg=pack.lambda_vgg(config.lambda_vgg))
