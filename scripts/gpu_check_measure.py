"""The device check's in-process measurements, one per process (``scripts/gpu_check.py`` starts them).

Each measurement runs in its own process so that a CUDA fault, an out-of-memory error or a hang
stops only that check. It writes its figures to ``--result`` as JSON after every row it finishes,
so a measurement stopped by its time limit still reports what it measured.

- ``agreement``: a pack on the device against the same pack on the CPU, on the same photos:
  encoder codes, synthesis from the same codes, N in-domain inversion steps from the same start
  (relative code difference ‖a − b‖ / ‖b − start‖, per photo, median checked), one PTI step
  (the tuned reconstructions, relative to what the step changed on the CPU).
- ``inversion-speed``: in-domain inversion (idinvert.invert, 100 steps) of a random-weight model at
  several batch sizes in float32 and under bf16 autocast: seconds, images/s, peak device memory,
  floating-point work per step (torch.utils.flop_counter) and its fraction of the device's peak,
  bf16's codes against float32's.
- ``encoder-speed``: the encoder alone, images/s in float32 and bf16.
- ``pti-speed``: pivotal tuning (idinvert.refine) of a batch, seconds per step and images/s.

Only the public API is used: ``idinvert`` (invert, refine, load_pack, read_images, ModelPack,
InversionConfig, RefineConfig) and ``idinvert.networks``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import idinvert
from idinvert.networks import DomainGuidedEncoder, StyleGANGenerator, VGG16Features

# NVIDIA's dense (no sparsity) peak TFLOP/s by device name: (substring, fp32, tf32, bf16).
# The first match wins, so the more specific names come first.
PEAK_TFLOPS = [
    ("H200 NVL", 60.0, 417.5, 835.0),
    ("H200", 67.0, 494.7, 989.4),
    ("H100 NVL", 60.0, 417.5, 835.0),
    ("H100 PCIe", 51.2, 378.0, 756.0),
    ("H100", 67.0, 494.7, 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 19.5, 156.0, 312.0),
    ("L40S", 91.6, 183.0, 362.0),
    ("L40", 90.5, 90.5, 181.0),
    ("L4", 30.3, 60.0, 121.0),
    ("A10", 31.2, 62.5, 125.0),
    ("V100", 15.7, None, None),
    ("T4", 8.1, None, None),
    ("P40", 11.8, None, None),
]
PTI_MAX_STEPS = 350  # PTI's max_pti_steps: images/s of pivotal tuning are quoted for this many steps


def public(name: str, *modules: str):
    """``name`` from the first of ``modules`` that defines it (configurations are moving into networks/)."""
    for module in modules:
        try:
            value = getattr(importlib.import_module(module), name, None)
        except ModuleNotFoundError:
            continue
        if value is not None:
            return value
    raise ImportError(f"{name} is in none of {', '.join(modules)}")


def peaks(device: torch.device) -> dict | None:
    """The device's dense peak TFLOP/s ({"name", "fp32", "tf32", "bf16"}), or None (CPU, unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, fp32, tf32, bf16 in PEAK_TFLOPS:
        if key in name:
            return {"name": name, "matched": key, "fp32": fp32, "tf32": tf32, "bf16": bf16}
    return None


class Recorder:
    """The measurement's figures, written to the result file after every change."""

    def __init__(self, path: Path, device: torch.device) -> None:
        self.path, self.figures = path, {"device": str(device), "rows": []}
        self.save()

    def set(self, **figures) -> None:
        self.figures.update(figures)
        self.save()

    def row(self, row: dict) -> None:
        self.figures["rows"].append(row)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.figures, indent=1, default=str, ensure_ascii=False) + "\n")
        tmp.replace(self.path)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def autocast(device: torch.device, dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def rel(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | None = None) -> float:
    """‖a − b‖ / ‖scale‖ (‖b‖ when no scale), in float64 on the CPU."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    s = b if scale is None else scale.detach().double().cpu()
    return float((a - b).norm() / s.norm().clamp_min(1e-30))


# ----------------------------------------------------------------------------------------------
# agreement: device against CPU


def agreement(args, device: torch.device, rec: Recorder) -> None:
    cpu_pack = idinvert.load_pack(args.pack, device="cpu")
    dev_pack = cpu_pack if device.type == "cpu" else idinvert.load_pack(args.pack, device=device)
    x = idinvert.read_images(args.photos, cpu_pack.resolution)  # [N, 3, R, R]
    rec.set(pack=cpu_pack.name, photos=len(args.photos), resolution=cpu_pack.resolution,
            same_device=dev_pack is cpu_pack, tolerances=TOLERANCES)
    failures = []

    def check(name: str, value: float, tolerance: float) -> None:
        ok = value <= tolerance
        rec.row({"quantity": name, "value": value, "tolerance": tolerance, "ok": ok})
        if not ok:
            failures.append(f"{name} {value:.3g} > {tolerance:g}")

    with torch.no_grad():
        codes_cpu = cpu_pack.encoder(x)
        codes_dev = dev_pack.encoder(x.to(dev_pack.device)).cpu()
        check("encoder codes ‖a−b‖/‖b‖", rel(codes_dev, codes_cpu), TOLERANCES["encoder"])
        img_cpu = cpu_pack.generator.synthesize(codes_cpu)
        img_dev = dev_pack.generator.synthesize(codes_cpu.to(dev_pack.device)).cpu()
        check("synthesis ‖a−b‖/‖b‖", rel(img_dev, img_cpu), TOLERANCES["synthesis"])
        rec.set(synthesis_max_abs=float((img_dev - img_cpu).abs().max()))
    config = idinvert.InversionConfig(steps=args.steps)
    inv_cpu = idinvert.invert(x, cpu_pack, config, init_codes=codes_cpu)
    inv_dev = idinvert.invert(x, dev_pack, config, init_codes=codes_cpu)
    per_photo = [rel(inv_dev.codes[i], inv_cpu.codes[i], inv_cpu.codes[i] - codes_cpu[i]) for i in range(len(x))]
    rec.set(inversion_steps=args.steps, inversion_per_photo=per_photo)
    check(f"{args.steps} inversion steps, median ‖a−b‖/‖b−start‖", statistics.median(per_photo),
          TOLERANCES["inversion"])
    if cpu_pack.resolution >= 32:  # PTI's LPIPS needs 32 px
        refine = idinvert.RefineConfig(steps=1, lpips_threshold=None)
        pivots = inv_cpu.codes.cpu()
        pti_cpu = idinvert.refine(x, pivots, cpu_pack, refine)
        pti_dev = idinvert.refine(x, pivots, dev_pack, refine)
        with torch.no_grad():
            untuned = cpu_pack.generator.synthesize(pivots)
        check("one PTI step: reconstructions ‖a−b‖/‖b−untuned‖",
              rel(pti_dev.reconstructions, pti_cpu.reconstructions, pti_cpu.reconstructions - untuned),
              TOLERANCES["pti"])
    if failures:
        raise AssertionError("beyond tolerance: " + "; ".join(failures))


TOLERANCES = {
    # TF32 convolutions (PyTorch's default for cuDNN) round inputs to 10 mantissa bits: ~1e-3 relative
    # per layer, so whole networks agree to ~1e-3..1e-2.
    "encoder": 1e-2,
    "synthesis": 1e-2,
    # Adam normalises each coordinate's step, so rounding differences grow: between 1 and 2 CPU threads
    # the official inversion's codes differ by 0.5 % to 18 % of their 10-step movement depending on the
    # face (shared/docs/training-notes.md, "Numerical noise floor"); median over the photos.
    "inversion": 0.25,
    # Adam's first step is lr·sign(g): coordinates whose gradient is near zero may flip.
    "pti": 0.25,
}


# ----------------------------------------------------------------------------------------------
# speed: random-weight models


def random_pack(config: str, device: torch.device) -> idinvert.ModelPack:
    """The official 256 configuration (G 29.5 M, E 165.3 M, Caffe VGG16 to conv4_3) or a tiny 32 px
    one, random weights (VGG He-initialised so its features have a sane scale)."""
    GeneratorConfig = public("GeneratorConfig", "idinvert.networks", "idinvert.config")
    EncoderConfig = public("EncoderConfig", "idinvert.networks", "idinvert.config")
    PerceptualConfig = public("PerceptualConfig", "idinvert.networks", "idinvert.config")
    torch.manual_seed(0)
    if config == "official256":
        g_cfg, e_cfg, _ = public("official_256", "idinvert.networks", "idinvert.config")()
    else:
        g_cfg = GeneratorConfig(resolution=32, z_dim=32, w_dim=32, mapping_layers=2, mapping_fmaps=32,
                                fmaps_base=512, fmaps_max=32)
        e_cfg = EncoderConfig(resolution=32, num_layers=g_cfg.num_layers, w_dim=g_cfg.w_dim, channels_base=8,
                              channels_max=32)
    g, e, f = StyleGANGenerator(g_cfg).eval(), DomainGuidedEncoder(e_cfg).eval(), VGG16Features("caffe").eval()
    with torch.no_grad():
        for m in f.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight)
                m.bias.zero_()
    pack = idinvert.ModelPack(name=f"{config}-random", generator=g, perceptual=f,
                              perceptual_config=PerceptualConfig(convention="caffe", lambda_vgg=5e-5), encoder=e)
    return pack.to(device)


def targets(pack: idinvert.ModelPack, n: int) -> torch.Tensor:
    """``n`` images synthesised from random W+ codes (seeded), on the pack's device."""
    gen = torch.Generator().manual_seed(1)
    codes = 0.3 * torch.randn(n, *pack.code_shape, generator=gen)
    with torch.no_grad():
        return pack.generator.synthesize(codes.to(pack.device)).clamp(-1, 1)


def flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def inversion_step_flops(pack, x: torch.Tensor) -> int:
    """Floating-point work of one in-domain step for ``x`` (invert with 2 steps minus with 1)."""
    two = flops(lambda: idinvert.invert(x, pack, idinvert.InversionConfig(steps=2)))
    one = flops(lambda: idinvert.invert(x, pack, idinvert.InversionConfig(steps=1)))
    return two - one


def timed_inversion(pack, x: torch.Tensor, steps: int, dtype: str) -> tuple[idinvert.InversionResult, dict]:
    device = pack.device
    step_times: list[float] = []
    last = [0.0]

    def tick(*_):
        sync(device)
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now

    with autocast(device, dtype):  # warm-up: allocations, cuDNN's first calls
        idinvert.invert(x, pack, idinvert.InversionConfig(steps=min(2, steps)))
    reset_peak(device)
    sync(device)
    start = last[0] = time.perf_counter()
    with autocast(device, dtype):
        result = idinvert.invert(x, pack, idinvert.InversionConfig(steps=steps), callback=tick)
    sync(device)
    wall = time.perf_counter() - start
    n = x.shape[0]
    s_step = statistics.median(step_times[1:] or step_times)
    return result, {"batch": n, "dtype": dtype, "steps": steps, "seconds": wall, "s_per_step": s_step,
                    "s_per_image": wall / n, "images_per_s": n / wall,
                    "s_per_image_at_100_steps": wall / n * 100 / steps, "peak_gib": peak_gib(device)}


def inversion_speed(args, device: torch.device, rec: Recorder) -> None:
    pack = random_pack(args.config, device)
    x_all = targets(pack, max(args.batches))
    peak = peaks(device)
    per_image_flops = inversion_step_flops(pack, x_all[:1])
    rec.set(config=args.config, steps=args.steps, flops_per_image_step=per_image_flops, peak_tflops=peak,
            tf32={"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32})
    failures = []
    for batch in args.batches:
        x = x_all[:batch]
        fp32_codes = start = None
        for dtype in ("float32", "bfloat16"):
            try:
                result, row = timed_inversion(pack, x, args.steps, dtype)
            except torch.OutOfMemoryError as exc:
                rec.row({"batch": batch, "dtype": dtype, "error": " ".join(str(exc).split())[:200]})
                failures.append(f"batch {batch} {dtype}: out of memory")
                torch.cuda.empty_cache()
                continue
            work = per_image_flops * batch
            row["tflops_per_s"] = work / row["s_per_step"] / 1e12
            if peak:
                keys = ("fp32", "tf32") if dtype == "float32" else ("bf16",)
                row["fraction_of_peak"] = {k: row["tflops_per_s"] / peak[k] for k in keys if peak[k]}
            if dtype == "float32":
                fp32_codes, start = result.codes, result.encoder_codes
            elif fp32_codes is not None:
                row["codes_vs_float32"] = rel(result.codes, fp32_codes, fp32_codes - start)
            rec.row(row)
    if failures:
        raise RuntimeError("; ".join(failures))


def encoder_speed(args, device: torch.device, rec: Recorder) -> None:
    pack = random_pack(args.config, device)
    x = targets(pack, args.batch)
    rec.set(config=args.config, batch=args.batch, repeats=args.repeats)
    for dtype in ("float32", "bfloat16"):
        with torch.no_grad(), autocast(device, dtype):
            pack.encoder(x)  # warm-up
            reset_peak(device)
            sync(device)
            start = time.perf_counter()
            for _ in range(args.repeats):
                pack.encoder(x)
            sync(device)
        wall = time.perf_counter() - start
        rec.row({"dtype": dtype, "batch": args.batch, "images_per_s": args.batch * args.repeats / wall,
                 "s_per_batch": wall / args.repeats, "peak_gib": peak_gib(device)})


def pti_speed(args, device: torch.device, rec: Recorder) -> None:
    pack = random_pack(args.config, device)
    x = targets(pack, args.batch)
    with torch.no_grad():
        pivots = pack.encoder(x)
    config = idinvert.RefineConfig(steps=args.steps, lpips_threshold=None)
    rec.set(config=args.config, batch=args.batch, steps=args.steps)
    idinvert.refine(x, pivots, pack, idinvert.RefineConfig(steps=1, lpips_threshold=None))  # warm-up
    step_times: list[float] = []
    last = [0.0]

    def tick(*_):
        sync(device)
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now

    reset_peak(device)
    sync(device)
    start = last[0] = time.perf_counter()
    idinvert.refine(x, pivots, pack, config, callback=tick)
    sync(device)
    wall = time.perf_counter() - start
    s_step = statistics.median(step_times[1:] or step_times)
    row = {"batch": args.batch, "steps": args.steps, "seconds": wall, "s_per_step": s_step,
           "image_steps_per_s": args.batch / s_step,
           f"images_per_s_at_{PTI_MAX_STEPS}_steps": args.batch / (PTI_MAX_STEPS * s_step),
           "peak_gib": peak_gib(device)}
    try:
        one = flops(lambda: idinvert.refine(x, pivots, pack, idinvert.RefineConfig(steps=1, lpips_threshold=None)))
        two = flops(lambda: idinvert.refine(x, pivots, pack, idinvert.RefineConfig(steps=2, lpips_threshold=None)))
        row["flops_per_step"] = two - one
        row["tflops_per_s"] = (two - one) / s_step / 1e12
        peak = peaks(device)
        if peak:
            row["fraction_of_peak"] = {k: row["tflops_per_s"] / peak[k] for k in ("fp32", "tf32") if peak[k]}
    except Exception as exc:  # the counter may not see through vmap; the timing stands without it
        row["flops_per_step"] = f"n/a: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    rec.row(row)


WORKERS = {"agreement": agreement, "inversion-speed": inversion_speed, "encoder-speed": encoder_speed,
           "pti-speed": pti_speed}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("worker", choices=sorted(WORKERS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--pack", default=None)
    p.add_argument("--photos", nargs="*", default=[])
    p.add_argument("--config", default="official256", choices=["official256", "tiny32"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batches", type=int, nargs="*", default=[1])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rec = Recorder(args.result, device)
    WORKERS[args.worker](args, device, rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
