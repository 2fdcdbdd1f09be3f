"""Inverting a whole data set with the default pack: wall time, images/s with 1 and K processes,
resident memory over the run (it should stay flat), and a kill midway followed by a resume that
must redo nothing that was finished.

    python benchmarks/invert_dataset_scale.py --work /tmp/utk-scale                 # the whole train split
    python benchmarks/invert_dataset_scale.py --work /tmp/utk-scale --count 64 --steps 5   # a quick check
    python benchmarks/invert_dataset_scale.py --work /tmp/utk-scale --steps 0 --subset 32  # what a slow CPU allows

``--steps 0`` inverts with the encoder alone (E(x), no optimisation): on a CPU the whole split at the
default 100 steps takes days, so the scale figures are then for streaming, sharding and resuming,
and ``--subset N`` adds one run of the first N photos at the default settings (100 steps, the
command line's batch size), whose images per second give the cost of the full default run.

Photos come from ../shared/data/utkface (the train split without duplicates, sorted names; the
first --count of them). Each run is the real command line, ``idinvert invert PHOTOS --no-images``
(under ``torchrun --standalone --nproc_per_node=K`` for K > 1), as a subprocess whose process tree
is sampled for resident memory. Writes ``invert_dataset_scale.json`` and ``.md`` (with the machine
line) into --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
UTKFACE = REPO.parent / "shared" / "data" / "utkface"


def extract_photos(folder: Path, count: int | None) -> list[Path]:
    """The train split's photos (no duplicates), sorted by name, the first ``count``; extracted once."""
    with open(UTKFACE / "labels.csv", newline="", encoding="utf-8") as f:
        names = sorted(r["file"] for r in csv.DictReader(f)
                       if r["split"] == "train" and r.get("duplicate_of_earlier", "0") != "1")
    names = names[:count] if count else names
    folder.mkdir(parents=True, exist_ok=True)
    missing = {n for n in names if not (folder / n).is_file()}
    if missing:
        with tarfile.open(UTKFACE / "images.tar") as tar:
            for member in tar:
                name = Path(member.name).name
                if name in missing:
                    (folder / name).write_bytes(tar.extractfile(member).read())
    wanted = set(names)
    extra = [p for p in folder.iterdir() if p.name not in wanted]
    for p in extra:  # a folder made for another --count
        p.unlink()
    return [folder / n for n in names]


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def options(args) -> list[str]:
    """The inversion options of the timed runs (the subset run uses the defaults)."""
    return ["--steps", str(args.steps)] + (["--batch-size", str(args.batch_size)] if args.batch_size else [])


def command(photos: Path, out: Path, processes: int, settings: list[str]) -> list[str]:
    verb = ["invert", str(photos), "--out", str(out), "--no-images", "--device", "cpu", *settings]
    if processes == 1:
        return [sys.executable, "-m", "idinvert", *verb]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "idinvert", *verb]


def shard_images(work: Path, seen: dict[str, int] | None = None) -> int:
    """Images in the finished shards of a work folder (``seen``: counts of shards already read)."""
    seen = {} if seen is None else seen
    for shard in (work / "shards").glob("*.npz") if (work / "shards").is_dir() else []:
        if shard.name not in seen:
            with np.load(shard) as data:
                seen[shard.name] = len(data["keys"])
    return sum(seen.values())


def run(cmd: list[str], env: dict, *, kill_at: int | None = None, work: Path | None = None) -> dict:
    """Run to the end (or SIGKILL once ``kill_at`` images are finished), sampling memory every 0.5 s."""
    start = time.perf_counter()
    load = [round(v, 2) for v in os.getloadavg()]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []
    killed = False
    seen: dict[str, int] = {}
    while process.poll() is None:
        samples.append((round(time.perf_counter() - start, 1), tree_rss(process.pid)))
        if kill_at is not None and shard_images(work, seen) >= kill_at:
            process.kill()  # SIGKILL: no chance to clean up
            killed = True
            break
        time.sleep(0.5)
    _, err = process.communicate()
    wall = time.perf_counter() - start
    if process.returncode != 0 and not killed:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    rss = [r for _, r in samples if r > 0]

    def window(lo: float, hi: float) -> float | None:  # median resident MB over a part of the run
        part = [r for t, r in samples if lo * wall <= t <= hi * wall and r > 0]
        return round(float(np.median(part)) / 2**20, 1) if part else None

    return {"wall_s": round(wall, 1), "peak_rss_mb": round(max(rss, default=0) / 2**20, 1),
            "rss_25_50_mb": window(0.25, 0.5), "rss_75_95_mb": window(0.75, 0.95),
            "rss_samples": [(t, round(r / 2**20, 1)) for t, r in samples[:: max(1, len(samples) // 50)]],
            "load_start_end": [load, [round(v, 2) for v in os.getloadavg()]], "stderr": err, "killed": killed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (photos and outputs)")
    parser.add_argument("--count", type=int, default=None, help="first N train photos (default: all)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts to time")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the command line's")
    parser.add_argument("--kill-at", type=float, default=0.5, help="kill the resume run at this fraction")
    parser.add_argument("--subset", type=int, default=0,
                        help="also time the first N photos at the default 100 steps and batch size, 1 process")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    photos = extract_photos(args.work / "photos", args.count)
    n = len(photos)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    report = {"images": n, "steps": args.steps, "batch_size": args.batch_size, "machine": machine(),
              "threads_per_process": int(env["OMP_NUM_THREADS"]), "runs": {}}
    for k in args.processes:
        out = args.work / f"out_{k}"
        subprocess.run(["rm", "-rf", str(out), str(out.parent / f".{out.name}.partial")], check=True)
        result = run(command(args.work / "photos", out, k, options(args)), env)
        result.pop("stderr")
        manifest = json.loads((out / "manifest.json").read_text())
        result["images_per_s"] = round(n / result["wall_s"], 3)
        result["compute_s_per_image"] = manifest["seconds_per_image"]
        result["batch_size"] = manifest["run"]["batch_size"]
        report["runs"][str(k)] = result
        print(f"{k} process(es): {result['wall_s']} s, {result['images_per_s']} img/s, "
              f"peak RSS {result['peak_rss_mb']} MB", flush=True)

    # kill midway, then the same command again: it must redo nothing that was finished
    out = args.work / "out_resume"
    work = out.parent / f".{out.name}.partial"
    subprocess.run(["rm", "-rf", str(out), str(work)], check=True)
    cmd = command(args.work / "photos", out, 1, options(args))
    first = run(cmd, env, kill_at=max(1, int(args.kill_at * n)), work=work)
    finished = shard_images(work)
    second = run(cmd, env)
    err = second.pop("stderr")
    said = re.search(r"resuming: (\d+) of (\d+) images are finished", err)
    redone = re.search(r"\((\d+) in this run", err)
    reference = args.work / f"out_{args.processes[0]}"
    codes, ref = np.load(out / "codes.npy"), np.load(reference / "codes.npy")
    report["resume"] = {
        "killed_after_s": first["wall_s"], "finished_when_killed": finished,
        "reported_finished": int(said.group(1)) if said else None,
        "inverted_after_resume": int(redone.group(1)) if redone else None,
        "redid_nothing": bool(redone and int(redone.group(1)) == n - finished),
        "resume_wall_s": second["wall_s"],
        "max_abs_code_difference_vs_uninterrupted": float(np.abs(codes - ref).max()),
    }
    if args.subset:
        report["subset"] = subset_run(args, env, n)
    name = "invert_dataset_scale" + (f"_{n}" if args.count else "")
    write_report(args.out / f"{name}.json", report, markdown(report, args))


def subset_run(args, env: dict, total: int) -> dict:
    """The first ``args.subset`` photos at the default settings (steps, batch size), one process; the
    whole split's cost from its seconds of inversion per image."""
    photos = extract_photos(args.work / "subset_photos", args.subset)
    out = args.work / "out_subset"
    subprocess.run(["rm", "-rf", str(out), str(out.parent / f".{out.name}.partial")], check=True)
    result = run(command(args.work / "subset_photos", out, 1, []), env)
    result.pop("stderr")
    manifest = json.loads((out / "manifest.json").read_text())
    result.update(images=len(photos), steps=manifest["settings"]["steps"], batch_size=manifest["run"]["batch_size"],
                  images_per_s=round(len(photos) / result["wall_s"], 4),
                  compute_s_per_image=manifest["seconds_per_image"])
    result["whole_split_hours_1_process"] = round(total * manifest["seconds_per_image"] / 3600, 1)
    print(f"subset: {result['wall_s']} s for {len(photos)} photos at {result['steps']} steps", flush=True)
    return result


def markdown(report: dict, args) -> str:
    n = report["images"]
    what = ("the encoder alone (`--steps 0`: E(x), no optimisation)" if args.steps == 0
            else f"in-domain inversion, {args.steps} steps")
    lines = [f"# Inverting a data set: {n} UTKFace train photos, default pack, {what}", "",
             f"Machine: {report['machine']}; {report['threads_per_process']} thread(s) per process; 2 cores shared "
             "with other agents' training, benchmark and evaluation jobs that ran throughout, so 2 processes "
             "competed with them for the cores: the load average at the start and end of each run is listed. "
             "Wall time includes starting Python and loading the pack in every process; batch size "
             f"{next(iter(report['runs'].values()))['batch_size']}"
             f"{'' if report['batch_size'] else ' (the command line default)'}.", "",
             "| processes | wall time | images/s | peak resident memory "
             "| median memory, 25–50 % → 75–95 % of the run | load average, start → end |",
             "|---|---|---|---|---|---|"]
    for k, r in report["runs"].items():
        lines.append(f"| {k} | {r['wall_s']:.1f} s | {r['images_per_s']:.2f} | {r['peak_rss_mb']:.0f} MB | "
                     f"{r['rss_25_50_mb']} → {r['rss_75_95_mb']} MB | "
                     f"{r['load_start_end'][0][0]} → {r['load_start_end'][1][0]} |")
    lines += ["", "Resident memory of the process tree is sampled every 0.5 s: the peak is the largest sample (a "
              "brief one: most samples stay near the medians), and the medians over the second quarter and over "
              "the end of the run show whether memory grows with the images done."]
    res = report["resume"]
    lines += ["", f"Killed (SIGKILL) after {res['killed_after_s']:.0f} s with {res['finished_when_killed']} images "
              f"finished; the same command then reported {res['reported_finished']} finished and inverted "
              f"{res['inverted_after_resume']} ({'nothing finished was redone' if res['redid_nothing'] else 'MISMATCH'}"
              f") in {res['resume_wall_s']:.0f} s; largest code difference from the uninterrupted run: "
              f"{res['max_abs_code_difference_vs_uninterrupted']:.2e}."]
    if "subset" in report:
        sub = report["subset"]
        lines += ["", f"## The default settings on a subset: the first {sub['images']} photos, {sub['steps']} steps, "
                  f"batch {sub['batch_size']}, 1 process", "",
                  f"{sub['wall_s']:.0f} s wall ({sub['images_per_s']:.3f} images/s with start-up), "
                  f"{sub['compute_s_per_image']:.2f} s of inversion per image (load average "
                  f"{sub['load_start_end'][0][0]} → {sub['load_start_end'][1][0]}). At that rate the whole split "
                  f"({n} photos) takes about {sub['whole_split_hours_1_process']:.0f} hours in one process on this "
                  "CPU; `benchmarks/results/inversion_speed_cpu.md` has the step times per batch size."]
    lines += ["", f"Command: `python benchmarks/invert_dataset_scale.py --work WORK"
              f"{f' --count {args.count}' if args.count else ''} --steps {args.steps}"
              f"{f' --batch-size {args.batch_size}' if args.batch_size else ''} "
              f"--processes {' '.join(map(str, args.processes))}"
              f"{f' --subset {args.subset}' if args.subset else ''}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
