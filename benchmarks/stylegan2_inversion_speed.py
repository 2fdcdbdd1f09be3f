"""Seconds per in-domain inversion step at 256 px: the official StyleGAN against a StyleGAN2 (random weights).

Both generators are inverted by the same loop (``optimize_codes``, networks frozen) with the same
objective (pixel MSE + λ_vgg·VGG16 conv4_3 + λ_dom·‖w − E(G(w))‖²), the same domain-guided encoder
architecture (both have W+ codes [14, 512] at 256 px) and the same Caffe-convention VGG16, so the
difference is the generator alone:

- StyleGAN: the official ``styleganinv_*256`` generator (IDInvert's configuration, 29.5 M parameters);
- StyleGAN2: config F's widths at 256 px (channel_base 32768, channel_max 512; 8-layer mapping),
  modulated convolutions with demodulation, FIR resampling, skip toRGB.

    python benchmarks/stylegan2_inversion_speed.py [--steps 5] [--batch 1] [--threads 1] [--out benchmarks/results]

Each generator runs twice, in the order A B B A, so that a change of load on a shared machine
weighs on both alike; the first step of each run (allocation warm-up) is left out of the median.
Writes ``stylegan2_inversion_speed_<device>.json`` and ``.md`` with the machine line and the load average.
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

from idinvert.networks.config import EncoderConfig, official_256  # noqa: E402
from idinvert.networks.derived import frozen  # noqa: E402
from idinvert.engine.inversion import optimize_codes  # noqa: E402
from idinvert.networks import (DomainGuidedEncoder, StyleGAN2Config, StyleGAN2Generator, StyleGANGenerator,  # noqa: E402
                               VGG16Features)
from idinvert.perceptual import PAPER_LAMBDA_VGG  # noqa: E402


def perceptual(device: torch.device) -> VGG16Features:
    """Caffe-convention VGG16 with He-initialised convolutions (a sane feature scale without weights)."""
    torch.manual_seed(0)
    f = VGG16Features("caffe").to(device).eval()
    with torch.no_grad():
        for m in f.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight)
                m.bias.zero_()
    return f


def generators(device: torch.device) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    g1_config, _, _ = official_256()
    g1 = StyleGANGenerator(g1_config).to(device).eval()
    g2 = StyleGAN2Generator(StyleGAN2Config(resolution=256)).to(device).eval()
    with torch.no_grad():  # a w_avg from samples, so that the targets are typical images
        g2.mapping.w_avg.copy_(g2.mapping(torch.randn(512, g2.z_dim, device=device)).mean(0))
    return {"StyleGAN (official 256)": g1, "StyleGAN2 (config F widths, 256)": g2}


def step_times(g, e, f, x: torch.Tensor, steps: int) -> list[float]:
    """Wall time of each step of an in-domain inversion of ``x`` from E(x)."""
    times, last = [], [time.perf_counter()]

    def tick(step, losses):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    with frozen(g, e, f), torch.no_grad():
        z0 = e(x)
    with frozen(g, e, f):
        last[0] = time.perf_counter()
        optimize_codes(g, f, x, z0, steps=steps, lr=0.01, lambda_vgg=PAPER_LAMBDA_VGG, lambda_dom=2.0,
                       encoder=e, callback=tick)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    f = perceptual(device)
    torch.manual_seed(1)  # one encoder for both: the same architecture, W+ [14, 512]
    e = DomainGuidedEncoder(EncoderConfig(resolution=256, num_layers=14, w_dim=512)).to(device).eval()
    nets = generators(device)
    targets = {}
    for name, g in nets.items():
        with torch.no_grad():
            z = torch.randn(args.batch, g.z_dim, generator=torch.Generator().manual_seed(2)).to(device)
            targets[name] = g(z, truncation_psi=0.7).clamp(-1, 1)
    times: dict[str, list[list[float]]] = {name: [] for name in nets}
    names = list(nets)
    for name in names + names[::-1]:  # A B B A
        times[name].append(step_times(nets[name], e, f, targets[name], args.steps))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = []
    for name, g in nets.items():
        rows.append({"generator": name, "parameters": sum(p.numel() for p in g.parameters()),
                     "code_shape": list(g.code_shape),
                     "s_per_step": statistics.median([t for run in times[name] for t in run[1:]]),
                     "step_times": [[round(t, 4) for t in run] for run in times[name]]})
    base = rows[0]["s_per_step"]
    for row in rows:
        row["relative_to_stylegan"] = row["s_per_step"] / base
    report = {"benchmark": "in-domain inversion step at 256 px, random weights", "steps": args.steps,
              "batch": args.batch, "device": device.type, "machine": machine(),
              "load_average_1_5_15min": [round(v, 2) for v in load] if load else None, "rows": rows,
              "command": f"python benchmarks/stylegan2_inversion_speed.py --steps {args.steps} --batch {args.batch}"
                         + (f" --threads {args.threads}" if args.threads else "")}
    lines = [f"# In-domain inversion step at 256 px: StyleGAN vs StyleGAN2 ({device.type})", "",
             f"Machine: {report['machine']}; load average at the end {report['load_average_1_5_15min']} "
             f"(a shared machine: absolute times are inflated, the ratio is the figure to read)", "",
             f"Batch {args.batch}, two runs of {args.steps} steps per generator in the order A B B A (median of "
             f"steps 2–{args.steps} of both runs), the same loop, encoder and VGG16; random weights.", "",
             "| generator | G parameters | code | seconds per step | relative |", "|---|---|---|---|---|"]
    lines += [f"| {r['generator']} | {r['parameters'] / 1e6:.1f} M | {r['code_shape']} | {r['s_per_step']:.3f} | "
              f"{r['relative_to_stylegan']:.2f}× |" for r in rows]
    lines += ["", f"Command: `{report['command']}`", ""]
    write_report(args.out / f"stylegan2_inversion_speed_{device.type}.json", report, "\n".join(lines))


if __name__ == "__main__":
    main()
