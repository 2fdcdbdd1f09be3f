"""What training runs cost and how their losses moved, from their own ``log.jsonl`` (the figures of a pack card).

    python benchmarks/run_costs.py --out docs/stylegan-faces64/training.json \
        distillation=RUNS/distill conventional=RUNS/conv domain-guided=RUNS/enc

Per run: images seen, wall time (resumed chunks add up), median images/s, and each logged loss as the mean
of the first, the middle and the last ten log lines (does it still fall at the end?).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_report  # noqa: E402
from distill_figures import training_cost  # noqa: E402

NOT_LOSSES = {"step", "images", "seconds", "img_per_s", "lr"}


def loss_trends(run: Path, lines: int = 10) -> dict[str, list[float]]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    keys = [k for k, v in rows[0].items() if k not in NOT_LOSSES and isinstance(v, (int, float))]
    middle = max(0, len(rows) // 2 - lines // 2)
    parts = (rows[:lines], rows[middle:middle + lines], rows[-lines:])
    return {k: [float(np.mean([r[k] for r in part if k in r])) for part in parts] for k in keys}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    report = {"machine": machine(), "command": "python " + " ".join(sys.argv), "runs": {}}
    for item in args.runs:
        name, _, folder = item.partition("=")
        cost = training_cost(Path(folder))
        if cost is None:
            raise SystemExit(f"{folder}: no log.jsonl with images and seconds")
        report["runs"][name] = {"images": cost["images"], "wall_minutes": round(60 * cost["wall_hours"], 1),
                                "median_img_per_s": cost["median_img_per_s"],
                                "losses_first_middle_last": loss_trends(Path(folder))}
    lines = ["# Training runs: cost and losses", "",
             f"Machine: {report['machine']}. Command: `{report['command']}`. Images: at the last log line.", "",
             "| run | images | wall minutes | median img/s | losses, first → middle → last ten log lines |",
             "|---|---|---|---|---|"]
    for name, r in report["runs"].items():
        losses = ", ".join(f"{k} " + " → ".join(f"{v:.3f}" for v in trend)
                           for k, trend in r["losses_first_middle_last"].items())
        lines.append(f"| {name} | {r['images']:,} | {r['wall_minutes']:.1f} | {r['median_img_per_s']:.1f} | "
                     f"{losses} |")
    write_report(args.out, report, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
