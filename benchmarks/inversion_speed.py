"""Speed of in-domain inversion: seconds per step and images per second, against the official loop.

Two configurations, each in one run with its own baseline:

- ``official256``: the official 256 configuration (G 29.5 M, E 165.3 M parameters, Caffe VGG16 to
  conv4_3) with random weights, targets synthesised from random W+ codes;
- ``default``: the bundled default pack at its 64 px (trained weights, torchvision VGG16 with its
  calibrated λ_vgg), targets sampled from its generator with its truncation.

Our step (``optimize_codes``, networks frozen, N images in one batch) is compared with the naive
step of the official port (networks not frozen, so every parameter gradient is computed and
accumulated; one image at a time, a fresh Adam per image). Runs alternate (naive, ours, ours,
naive, … and batch sizes up then down) so that a change of load on a shared machine weighs on
both alike; the first step of every run (allocation warm-up) is left out of the medians. Images
per second are for the default 100 steps: batch / (100 · seconds per step), optimisation only
(reading photos and running the encoder once add little). Wall and CPU time (of the timing
thread) are both recorded: on a busy machine the CPU time shows what the step costs.

For the official configuration the codes after --steps steps are compared:
‖ours − naive‖ / ‖naive − E(x)‖, at batch 1 and batch --batch, and batched against one at a time
in float64 (coupling between the images of a batch would show there; rounding would not).

    python benchmarks/inversion_speed.py [--configs official256 default] [--threads 1]

Writes ``inversion_speed_<device>.json`` and ``.md`` with the machine line and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_report  # noqa: E402

from idinvert.engine.inversion import default_batch_size  # noqa: E402
from idinvert.networks.config import official_256  # noqa: E402
from idinvert.networks.derived import frozen  # noqa: E402
from idinvert.engine.inversion import optimize_codes  # noqa: E402
from idinvert.networks import DomainGuidedEncoder, StyleGANGenerator, VGG16Features  # noqa: E402
from idinvert.pack import load_pack  # noqa: E402
from idinvert.perceptual import PAPER_LAMBDA_VGG  # noqa: E402

STEPS_PER_IMAGE = 100  # the default number of optimisation steps, for images per second


def official_networks(device: torch.device):
    torch.manual_seed(0)
    g_cfg, e_cfg, _ = official_256()
    g = StyleGANGenerator(g_cfg).to(device).eval()
    e = DomainGuidedEncoder(e_cfg).to(device).eval()
    f = VGG16Features("caffe").to(device).eval()
    with torch.no_grad():  # random but sane VGG scale: He-initialised convs, zero biases
        for m in f.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight)
                m.bias.zero_()
    return g, e, f


def official_targets(g, n: int, device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return g.synthesize((0.3 * torch.randn(n, *g.code_shape, generator=gen)).to(device))


def pack_targets(g, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return g.synthesize(g.sample_codes(torch.randn(n, g.z_dim, generator=gen).to(g.device))).clamp(-1, 1)


class StepTimes:
    """Wall and CPU seconds of every step of one run (``callback`` for ``optimize_codes``)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.start()

    def start(self) -> None:
        self._last = (time.perf_counter(), time.thread_time())

    def tick(self, *_) -> None:
        now = (time.perf_counter(), time.thread_time())
        self.wall.append(now[0] - self._last[0])
        self.cpu.append(now[1] - self._last[1])
        self._last = now


def naive_inversion(g, e, f, x, z0, steps: int, lambda_vgg: float, times: StepTimes) -> torch.Tensor:
    """The official port's loop: one image, networks trainable, a fresh Adam on the code."""
    for net in (g, e, f):
        net.requires_grad_(True)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.01)
    target_feat = f(x).detach()
    times.start()
    for _ in range(steps):
        recon = g.synthesize(z)
        loss = (x - recon).square().mean() + lambda_vgg * (target_feat - f(recon)).square().mean() \
            + 2.0 * (z - e(recon)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.tick()
    for net in (g, e, f):
        net.zero_grad(set_to_none=True)
        net.requires_grad_(False)
    return z.detach()


def ours(g, e, f, x, z0, steps: int, lambda_vgg: float, times: StepTimes) -> torch.Tensor:
    with frozen(g, e, f):
        times.start()
        return optimize_codes(g, f, x, z0, steps=steps, lr=0.01, lambda_vgg=lambda_vgg, lambda_dom=2.0,
                              encoder=e, callback=times.tick).codes


def medians(runs: list[StepTimes]) -> dict:
    """Median seconds per step over runs, each without its first step."""
    return {"s_per_step": statistics.median(t for r in runs for t in r.wall[1:]),
            "cpu_s_per_step": statistics.median(t for r in runs for t in r.cpu[1:])}


def row(s_per_step: float, batch: int, naive: float) -> dict:
    per_image = s_per_step / batch
    return {"batch": batch, "s_per_image_step": per_image, "speedup_per_image": naive / per_image,
            "images_per_s_at_100_steps": 1.0 / (STEPS_PER_IMAGE * per_image)}


def official_run(args, device: torch.device) -> dict:
    g, e, f = official_networks(device)
    x = official_targets(g, args.batch, device)
    with torch.no_grad():
        z0 = e(x)
    naive_t, one_t, naive_codes, ours_one = [], [], [], []
    for i in range(args.batch):  # naive, ours, ours, naive, ...
        order = ("naive", "ours") if i % 2 == 0 else ("ours", "naive")
        for which in order:
            times = StepTimes()
            fn = naive_inversion if which == "naive" else ours
            codes = fn(g, e, f, x[i:i + 1], z0[i:i + 1], args.steps, PAPER_LAMBDA_VGG, times)
            (naive_t if which == "naive" else one_t).append(times)
            (naive_codes if which == "naive" else ours_one).append(codes)
    naive_codes, ours_one = torch.cat(naive_codes), torch.cat(ours_one)
    batch_t = StepTimes()
    ours_batch = ours(g, e, f, x, z0, args.steps, PAPER_LAMBDA_VGG, batch_t)
    naive, one, batched = medians(naive_t), medians(one_t), medians([batch_t])
    movement = (naive_codes - z0).norm()
    result = {"config": "official 256 (G 29.5M, E 165.3M, VGG16 to conv4_3), random weights",
              "steps": args.steps, "naive_batch1": naive, "ours": {"1": one, str(args.batch): batched},
              "rows": [row(one["s_per_step"], 1, naive["s_per_step"]),
                       row(batched["s_per_step"], args.batch, naive["s_per_step"])],
              "naive_images_per_s_at_100_steps": 1.0 / (STEPS_PER_IMAGE * naive["s_per_step"]),
              "code_gap_batch1": float((ours_one - naive_codes).norm() / movement),
              f"code_gap_batch{args.batch}": float((ours_batch - naive_codes).norm() / movement),
              "code_movement_norm": float(movement)}
    # Batched vs one at a time in float64, a few steps: separates coupling (a bug) from rounding.
    steps64 = min(args.steps, 3)
    g, e, f, x, z0 = (t.double() for t in (g, e, f, x, z0))
    alone = torch.cat([ours(g, e, f, x[i:i + 1], z0[i:i + 1], steps64, PAPER_LAMBDA_VGG, StepTimes())
                       for i in range(args.batch)])
    together = ours(g, e, f, x, z0, steps64, PAPER_LAMBDA_VGG, StepTimes())
    result["float64_steps"] = steps64
    result[f"float64_code_gap_batch{args.batch}_vs_alone"] = float((together - alone).norm() / (alone - z0).norm())
    return result


def pack_run(args, device: torch.device) -> dict:
    pack = load_pack("default", device=device)
    g, e, f = pack.generator, pack.encoder, pack.perceptual
    lambda_vgg = pack.perceptual_config.lambda_vgg
    x = pack_targets(g, max(args.pack_batches))
    with torch.no_grad():
        z0 = e(x)
    runs: dict[str, list[StepTimes]] = {"naive": []}
    plan = ["naive", *args.pack_batches]
    for round_, order in enumerate((plan, plan[::-1])):  # up, then down
        for which in order:
            times = StepTimes()
            if which == "naive":
                naive_inversion(g, e, f, x[round_:round_ + 1], z0[round_:round_ + 1], args.pack_steps, lambda_vgg,
                                times)
            else:
                ours(g, e, f, x[:which], z0[:which], args.pack_steps, lambda_vgg, times)
            runs.setdefault(str(which), []).append(times)
    naive = medians(runs.pop("naive"))
    ours_t = {b: medians(r) for b, r in runs.items()}
    rows = [row(m["s_per_step"], int(b), naive["s_per_step"]) for b, m in ours_t.items()]
    best = max(rows, key=lambda r: r["images_per_s_at_100_steps"])
    return {"config": f"bundled default pack {pack.name!r} at {pack.resolution} px (trained weights, "
                      f"torchvision VGG16, λ_vgg {lambda_vgg})",
            "steps": args.pack_steps, "naive_batch1": naive, "ours": ours_t, "rows": rows,
            "naive_images_per_s_at_100_steps": 1.0 / (STEPS_PER_IMAGE * naive["s_per_step"]),
            "best_batch": best["batch"], "command_line_default_batch": default_batch_size(pack)}


def best_row(result: dict) -> dict:
    return next(r for r in result["rows"] if r["batch"] == result["best_batch"])


def naive_cpu_ratio(result: dict, batch: int) -> float:
    """The naive step's CPU seconds over ours, per image, at ``batch``."""
    return result["naive_batch1"]["cpu_s_per_step"] * batch / result["ours"][str(batch)]["cpu_s_per_step"]


def table(result: dict) -> list[str]:
    naive = result["naive_batch1"]
    lines = ["| step | seconds per step (CPU s) | seconds per image-step | images/s at 100 steps | "
             "speed-up per image |", "|---|---|---|---|---|",
             f"| naive (official port: networks not frozen, batch 1) | {naive['s_per_step']:.3f} "
             f"({naive['cpu_s_per_step']:.3f}) | {naive['s_per_step']:.3f} | "
             f"{result['naive_images_per_s_at_100_steps']:.4f} | 1.00× |"]
    for r in result["rows"]:
        m = result["ours"][str(r["batch"])]
        lines.append(f"| ours, batch {r['batch']} | {m['s_per_step']:.3f} ({m['cpu_s_per_step']:.3f}) | "
                     f"{r['s_per_image_step']:.4f} | {r['images_per_s_at_100_steps']:.4f} | "
                     f"{r['speedup_per_image']:.2f}× |")
    return lines


def markdown(report: dict, args) -> str:
    lines = [f"# In-domain inversion speed ({report['device']})", "",
             f"Machine: {report['machine']}; load average {report['load_before']} before and "
             f"{report['load_after']} after (a shared 2-core machine: other agents' training, "
             "benchmark and evaluation jobs ran alongside). Wall seconds per step, median; CPU seconds of the "
             "timing thread in brackets.", ""]
    if "official256" in report:
        r = report["official256"]
        lines += [f"## {r['config']}, {r['steps']} steps per run", "", *table(r), "",
                  f"Codes after {r['steps']} steps, ‖ours − naive‖ / ‖naive − E(x)‖: batch 1 "
                  f"{100 * r['code_gap_batch1']:.3f} %, batch {args.batch} "
                  f"{100 * r[f'code_gap_batch{args.batch}']:.3f} %. In float64, batch {args.batch} against the "
                  f"same images one at a time after {r['float64_steps']} steps: "
                  f"{100 * r[f'float64_code_gap_batch{args.batch}_vs_alone']:.2e} %. Batching does not couple "
                  "the images; the float32 gap of the batched run comes from convolutions that sum in another "
                  "order when the batch is larger, which Adam's sign-like first steps amplify. At 256 px "
                  "batch 1 is the fastest per image on this CPU, and the command line's default there.", "",
                  "Against the official loop our step runs the same forward passes and the same gradients with "
                  "respect to the image, and leaves out the gradients with respect to the weights (about a third "
                  "of the naive step's arithmetic) and their accumulation into 210 M parameter gradients. What is "
                  "left is convolution arithmetic, so the ratio at batch 1 "
                  f"({naive_cpu_ratio(r, 1):.2f}× in CPU time, {r['rows'][0]['speedup_per_image']:.2f}× in wall time "
                  "on the loaded machine) stays short of 3× on this CPU unless the arithmetic itself changes "
                  "(lower precision, which changes the codes).", ""]
    if "default" in report:
        r = report["default"]
        lines += [f"## {r['config']}, {r['steps']} steps per run", "", *table(r), "",
                  f"Per image, batch {r['best_batch']} is "
                  f"{r['rows'][0]['s_per_image_step'] / best_row(r)['s_per_image_step']:.2f}× as fast as batch 1 and "
                  f"{best_row(r)['speedup_per_image']:.2f}× as fast as the official loop "
                  f"({naive_cpu_ratio(r, r['best_batch']):.2f}× in CPU time). "
                  f"The most images per second here come with batch {r['best_batch']}: at 64 px one image "
                  "leaves the CPU's vector units idle in the small late layers (8×8 and 16×16 maps), and a "
                  "batch fills them. On a CPU the command line (`invert`, `evaluate`, `diffuse`) inverts packs "
                  f"of 64 px or less {r['command_line_default_batch']} images at a time (`--batch-size` "
                  "overrides it; the codes differ from batch 1's by float rounding only, as the float64 check "
                  "above shows).", ""]
    lines += ["What made our step faster: the networks are frozen (no parameter gradients), the target's "
              "VGG features are computed once, and inside `frozen(...)` every weight derived from a frozen "
              "parameter (equalised-learning-rate W·c, the summed 4×4 up-convolution kernels) is computed once "
              "per inversion instead of at every step (`networks/derived.py`; bit-identical codes). At 256 px "
              "that was mostly the encoder's last dense layer: 117 M multiplications into a fresh 470 MB "
              "buffer per step. Not adopted: `channels_last` (no gain at 64 px, codes change by ~1e-3), "
              "fused/foreach Adam (one 2,560-element tensor: the update is under 1 % of a step), and "
              "`torch.compile` (default pack, batch 4, 1 thread: 0.53 s per step compiled against 0.35 s "
              "eager, after 284 s of compilation; gradients differ by 3e-5 relative).", "",
              f"Command: `OMP_NUM_THREADS={args.threads} python benchmarks/inversion_speed.py "
              f"--configs {' '.join(args.configs)} --threads {args.threads}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=("official256", "default"), default=["official256", "default"])
    parser.add_argument("--steps", type=int, default=10, help="steps per run, official 256 configuration")
    parser.add_argument("--batch", type=int, default=4, help="batch size besides 1, official 256 configuration")
    parser.add_argument("--pack-steps", type=int, default=6, help="steps per run, default pack")
    parser.add_argument("--pack-batches", type=int, nargs="+", default=[1, 4, 16, 32], help="default pack")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report = {"device": device.type, "machine": machine(), "logical_cpus": os.cpu_count(),
              "load_before": [round(v, 2) for v in os.getloadavg()]}
    if "official256" in args.configs:
        report["official256"] = official_run(args, device)
    if "default" in args.configs:
        report["default"] = pack_run(args, device)
    report["load_after"] = [round(v, 2) for v in os.getloadavg()]
    write_report(args.out / f"inversion_speed_{device.type}.json", report, markdown(report, args))


if __name__ == "__main__":
    main()
