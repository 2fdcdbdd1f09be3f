"""Seconds per StyleGAN2 synthesis pass on the two paths of the modulated convolution.

- fused: per-sample weights ``[N, O, I, 3, 3]`` and one grouped convolution (``fused_modconv=True``);
- activations: styles scale the input channels, the shared weight convolves, the demodulation
  coefficients scale the output channels (``fused_modconv=False``, NVIDIA's path in training).

Two generators (random weights): the 64 px default distill student (``student_config("stylegan2")``)
and a small 256 px model with config F's structure (8-layer mapping, lr ×0.01, w 512) at a quarter of
its channels (channel_base 8192, channel_max 256). Two modes: forward + backward (gradients for the
parameters and the codes, as in training and inversion) and forward under ``torch.no_grad()``.

    python benchmarks/stylegan2_modconv.py [--batches 1 8 32] [--reps 3] [--threads 1] [--out benchmarks/results]
    python benchmarks/stylegan2_modconv.py --render benchmarks/results/stylegan2_modconv_cpu.json

Each case runs the paths in the order A B B A, ``reps`` passes per run (more, up to 20, until 1 s is
timed) after one warm-up pass, so that a change of load on a shared machine weighs on both alike; the
median pass is reported. Writes
``stylegan2_modconv_<device>.json`` and ``.md`` with the machine line and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_report  # noqa: E402

from idinvert.networks import StyleGAN2Config, StyleGAN2Generator  # noqa: E402
from idinvert.networks.stylegan2_layers import fused_modconv_pays  # noqa: E402
from idinvert.training.distill import student_config  # noqa: E402

PATHS = {"fused": True, "activations": False}


def models() -> dict[str, StyleGAN2Config]:
    return {"student 64 px": student_config("stylegan2", z_dim=100, resolution=64),
            "config F-like 256 px": StyleGAN2Config(resolution=256, channel_base=8192, channel_max=256)}


def seconds_per_pass(g: StyleGAN2Generator, codes: torch.Tensor, *, fused: bool, grad: bool, reps: int) -> list[float]:
    times: list[float] = []
    while len(times) < reps + 1 or (sum(times[1:]) < 1.0 and len(times) < 21):  # ≥ 1 s of passes; the first allocates
        start = time.perf_counter()
        if grad:
            c = codes.clone().requires_grad_(True)
            g.synthesize(c, fused_modconv=fused).square().mean().backward()
            g.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                g.synthesize(codes, fused_modconv=fused)
        times.append(time.perf_counter() - start)
    return times[1:]


def measure(config: StyleGAN2Config, batch: int, *, grad: bool, reps: int) -> dict[str, float]:
    torch.manual_seed(0)
    g = StyleGAN2Generator(config).train(grad)
    codes = g.sample_codes(torch.randn(batch, config.z_dim)).detach()
    runs: dict[str, list[float]] = {name: [] for name in PATHS}
    for name in ["fused", "activations", "activations", "fused"]:
        runs[name] += seconds_per_pass(g, codes, fused=PATHS[name], grad=grad, reps=reps)
    return {name: statistics.median(t) for name, t in runs.items()}


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def markdown(report: dict) -> str:
    """The report as a table; ``auto`` follows the current ``fused_modconv_pays``, so re-rendering a stored
    report (``--render``) shows the rule next to the times it was chosen from."""
    lines = [f"# StyleGAN2 modulated convolution: fused vs activation path ({report['device']})", "",
             f"Machine: {report['machine']}; load average (1, 5, 15 min) before {report['load_before']}, "
             f"after {report['load_after']} (a shared machine, other jobs running: read the ratios, not the "
             "absolute times).", "",
             f"Median of ≥ {2 * report['reps']} passes per path (order A B B A, one warm-up pass each, a run repeats "
             "passes until it has timed 1 s); random weights. "
             "fwd+bwd: gradients for the parameters and the codes; fwd: under no_grad. "
             "faster: the path with the smaller median; auto: the path `fused_modconv_pays` picks.", "",
             "| model | mode | batch | fused s | activations s | fused / activations | faster | auto |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        faster = "fused" if row["fused"] < row["activations"] else "activations"
        auto = "fused" if fused_modconv_pays(row["batch"], row["mode"] == "fwd+bwd") else "activations"
        lines.append(f"| {row['model']} | {row['mode']} | {row['batch']} | {row['fused']:.3f} | "
                     f"{row['activations']:.3f} | {row['fused'] / row['activations']:.2f}× | {faster} | {auto} |")
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--reps", type=int, default=3, help="timed passes per path and run (two runs per path)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(models()), help="which of the two models to time")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--render", type=Path, help="only write the Markdown of this stored JSON report")
    args = parser.parse_args()
    if args.render:
        report = json.loads(args.render.read_text())
        write_report(args.render, report, markdown(report))
        return
    torch.set_num_threads(args.threads)
    report = {"device": "cpu", "machine": f"{machine()}, {os.cpu_count()} CPUs", "reps": args.reps,
              "load_before": load_average(),
              "command": shlex.join(["python", "benchmarks/stylegan2_modconv.py", *sys.argv[1:]]), "rows": []}
    for name in args.models:
        for grad in (True, False):
            for batch in args.batches:
                times = measure(models()[name], batch, grad=grad, reps=args.reps)
                row = {"model": name, "mode": "fwd+bwd" if grad else "fwd", "batch": batch, **times}
                report["rows"].append(row)
                print(row, flush=True)
    report["load_after"] = load_average()
    write_report(args.out / "stylegan2_modconv_cpu.json", report, markdown(report))


if __name__ == "__main__":
    main()
