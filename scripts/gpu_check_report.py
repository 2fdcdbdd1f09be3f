"""The device check's reports: gpu_check.json (every check's entry) and gpu_check.md (tables, targets)."""

from __future__ import annotations

import json
from pathlib import Path

PAPER = "8 s per image on a P40 (the paper's in-domain inversion, 100 steps)"
TARGET_S_PER_IMAGE = 0.2  # seconds per 100-step image at batch 32, 256 px
BF16_CODES_TOLERANCE = 0.01  # bf16 codes within 1 % of float32's movement


def summary(checks: list[dict]) -> dict:
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    for entry in checks:
        counts[entry["status"]] += 1
    return counts


def write(out: Path, *, mode: str, device: str, wall_s: float, environment: dict, checks: list[dict],
          speed_config: str) -> None:
    """gpu_check.json and gpu_check.md in ``out`` as the checks stand."""
    report = {"format": "idinvert-gpu-check", "version": 1, "mode": mode, "device": device,
              "machine": machine_line(environment), "cpu_rehearsal": not device.startswith("cuda"),
              "wall_s": round(wall_s, 1), "summary": summary(checks), "environment": environment,
              "targets": targets({c["name"]: c for c in checks}, device, speed_config), "checks": checks}
    atomic_write(out / "gpu_check.json", json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    atomic_write(out / "gpu_check.md", markdown(report))


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def machine_line(env: dict) -> str:
    if not env:
        return ""
    gpu = f"{env['gpu']} ({env.get('gpu_memory_gib')} GiB, CUDA {env.get('cuda')}), " if env.get("gpu") else ""
    at = f", idinvert at commit {env['commit']}" if env.get("commit") else ""
    return (f"{gpu}{env['cpu']}, {env['cpu_count']} CPU cores, {env['threads']} threads, torch {env['torch']}, "
            f"Python {env['python']}{at}")


def targets(checks: dict, device: str, speed_config: str) -> dict:
    """The 256 px target (≤ 0.2 s per 100-step image at batch 32) against the measured rows."""
    inv = checks.get("speed/inversion", {}).get("figures", {})
    rows = inv.get("rows", [])
    on_gpu = device.startswith("cuda")
    out = {"paper": PAPER, "target": f"≤ {TARGET_S_PER_IMAGE} s per 100-step image at batch 32 at 256 px"}
    if not on_gpu:
        out["verdict"] = "not measured on a GPU (this run used the CPU)"
        return out
    for dtype in ("float32", "bfloat16"):
        row = next((r for r in rows if r.get("batch") == 32 and r.get("dtype") == dtype and "seconds" in r), None)
        if row is not None and speed_config == "official256":
            value = row["s_per_image_at_100_steps"]
            usable = dtype == "float32" or bool(inv.get("bf16_accepted"))
            out[dtype] = {"s_per_image_at_100_steps": value, "met": usable and value <= TARGET_S_PER_IMAGE,
                          "codes_usable": usable, "vs_paper": 8.0 / value}
    out["verdict"] = "; ".join(
        f"{k}: {v['s_per_image_at_100_steps']:.3f} s per image, {v['vs_paper']:.0f}× faster than the paper's P40, "
        + ("met" if v["met"] else "not met" if v["codes_usable"]
           else f"not counted: its codes are not within {BF16_CODES_TOLERANCE:.0%} of float32's")
        for k, v in out.items() if isinstance(v, dict)) or "no batch-32 row at 256 px"
    return out


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def gflop(value) -> str:
    return f"{value / 1e9:.1f} GFLOP" if isinstance(value, (int, float)) else fmt(value)


def markdown(report: dict) -> str:
    checks = {c["name"]: c for c in report["checks"]}
    s = report["summary"]
    lines = ["# Device check (`scripts/gpu_check.sh`)", ""]
    if report["cpu_rehearsal"]:
        lines += ["**CPU rehearsal.** This run used the CPU (`--device cpu`): it shows that the script and every "
                  "check run end to end. Its times and speeds are not GPU figures and must never be quoted as such.",
                  ""]
    lines += [f"Machine: {report['machine']}  ", f"Mode: `{report['mode']}`, device `{report['device']}`; "
              f"{s['ok']} ok, {s['failed']} failed, {s['skipped']} skipped; wall time {report['wall_s']:.0f} s.", ""]
    missing = (report["environment"] or {}).get("weight_packages_missing")
    if missing:
        lines += ["Weight packages missing here (the checks that need them fail): "
                  + ", ".join(f"`{k}` ({v})" for k, v in missing.items()) + ".", ""]
    t = report["targets"]
    lines += ["## Speed against the paper and the target", "",
              f"- The paper: {t['paper']}.", f"- The target: {t['target']}.", f"- This run: {t['verdict']}.", ""]
    lines += checks_table(report["checks"])
    lines += agreement_tables(checks)
    lines += speed_tables(checks)
    lines += trainer_table(checks)
    failed = [c for c in report["checks"] if c["status"] == "failed"]
    if failed:
        lines += ["## Failures", ""]
        lines += [f"- `{c['name']}`: {c.get('error', '')}" for c in failed]
        lines += [""]
    lines += ["Command: `bash scripts/gpu_check.sh OUTDIR --device "
              f"{report['device']}{'' if report['mode'] == 'full' else ' --' + report['mode']}`", ""]
    return "\n".join(lines)


def checks_table(entries: list[dict]) -> list[str]:
    lines = ["## Every check", "", "| check | status | seconds | figures / error |", "|---|---|---|---|"]
    for c in entries:
        f = c.get("figures") or {}
        if c["status"] == "failed":
            note = c.get("error", "")
        elif c["status"] == "skipped":
            note = c.get("reason", "")
        else:
            keys = ("photos", "bf16_accepted", "codes_shape", "tuned_files", "files", "faces", "img_per_s", "source", "backend", "note",
                    "table1_rows", "samples_per_s_with_startup", "gpu", "cpu")
            note = ", ".join(f"{k} {fmt(f[k])}" for k in keys if f.get(k) is not None)
        note = note.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{c['name']}` | {c['status']} | {c['seconds']:.1f} | {note} |")
    return lines + [""]


def agreement_tables(checks: dict) -> list[str]:
    entries = [c for n, c in checks.items() if n.startswith("agreement/") and c.get("figures", {}).get("rows")]
    if not entries:
        return []
    lines = ["## Device against CPU (same inputs)", "",
             "Relative differences; the inversion row is the median over the photos of ‖a − b‖ / ‖b − start‖ "
             "(both runs start from the CPU's encoder codes). Tolerances: TF32 convolutions (PyTorch's cuDNN "
             "default) allow ~1e-3..1e-2 on whole networks; Adam's normalised steps let rounding grow to "
             "0.5–18 % of the movement between CPU thread counts (training-notes, \"Numerical noise floor\").", "",
             "| pack | quantity | value | tolerance | ok |", "|---|---|---|---|---|"]
    for c in entries:
        pack = c["name"].split("/", 1)[1]
        for r in c["figures"]["rows"]:
            lines.append(f"| {pack} | {r['quantity']} | {fmt(r['value'])} | {fmt(r['tolerance'])} | "
                         f"{'yes' if r['ok'] else '**no**'} |")
    if any(c["figures"].get("same_device") for c in entries):
        lines += ["", "The device is the CPU here, so both sides are the same computation (differences 0)."]
    return lines + [""]


def speed_tables(checks: dict) -> list[str]:
    lines = []
    inv = checks.get("speed/inversion", {}).get("figures", {})
    if inv.get("rows"):
        peak = inv.get("peak_tflops")
        lines += ["## In-domain inversion speed", "",
                  f"{inv.get('config')} (random weights), {inv.get('steps')} steps, idinvert.invert end to end "
                  f"(encoder, steps, final synthesis); floating-point work per image-step "
                  f"{inv.get('flops_per_image_step', 0) / 1e9:.1f} GFLOP (torch.utils.flop_counter); peak: "
                  + (f"{peak['name']} as {peak['matched']}: {peak['fp32']} fp32 / {peak['tf32']} TF32 / "
                     f"{peak['bf16']} bf16 dense TFLOP/s" if peak else "n/a (no GPU, or a GPU not in the table)")
                  + f"; TF32 allowed: {inv.get('tf32')}.", "",
                  "| batch | dtype | s per step | s per image (100 steps) | images/s | TFLOP/s | fraction of peak "
                  "| peak memory GiB | bf16 codes vs float32 |", "|---|---|---|---|---|---|---|---|---|"]
        for r in inv["rows"]:
            if "error" in r:
                lines.append(f"| {r['batch']} | {r['dtype']} | {r['error']} | | | | | | |")
                continue
            frac = ", ".join(f"{k} {v:.1%}" for k, v in (r.get("fraction_of_peak") or {}).items()) or "n/a"
            lines.append(f"| {r['batch']} | {r['dtype']} | {fmt(r['s_per_step'])} | "
                         f"{fmt(r['s_per_image_at_100_steps'])} | {fmt(r['images_per_s'])} | "
                         f"{fmt(r.get('tflops_per_s'))} | {frac} | {fmt(r.get('peak_gib'))} | "
                         f"{fmt(r.get('codes_vs_float32'))} |")
        lines += ["", f"bf16 autocast is accepted when its codes differ from float32's by at most "
                      f"{BF16_CODES_TOLERANCE:.0%} of float32's movement (‖bf16 − fp32‖ / ‖fp32 − E(x)‖, same "
                      f"batch): {'accepted' if inv.get('bf16_accepted') else 'not accepted'} here. The library "
                      f"computes in float32; this row only says whether bf16 would be an option.", ""]
    enc = checks.get("speed/encoder", {}).get("figures", {})
    if enc.get("rows"):
        lines += ["## Encoder alone", "", "| dtype | batch | images/s | peak memory GiB |", "|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['batch']} | {fmt(r['images_per_s'])} | {fmt(r.get('peak_gib'))} |"
                  for r in enc["rows"]]
        lines += [""]
    pti = checks.get("speed/pti", {}).get("figures", {})
    if pti.get("rows"):
        r = pti["rows"][0]
        lines += ["## Pivotal tuning", "", f"{pti.get('config')} (random weights), batch {r['batch']}, "
                  f"{r['steps']} step(s): {fmt(r['s_per_step'])} s per step, {fmt(r['image_steps_per_s'])} "
                  f"image-steps/s, {fmt(r.get('images_per_s_at_350_steps'))} images/s at PTI's 350 steps; "
                  f"work per step {gflop(r.get('flops_per_step'))}; peak memory {fmt(r.get('peak_gib'))} GiB.", ""]
    return lines


def trainer_table(checks: dict) -> list[str]:
    entries = [c for n, c in checks.items() if n.startswith("train/") and c["status"] == "ok"]
    if not entries:
        return []
    lines = ["## Training throughput at 64 px", "",
             "images/s: the trainer's own recent rate at its last log line (and images over seconds between "
             "log lines after the first step); train-boundary: codes sampled and scored per second, process "
             "start included.", "", "| trainer | batch | steps | images/s | images/s (span) |", "|---|---|---|---|---|"]
    for c in entries:
        f = c["figures"]
        rate = f.get("img_per_s", f.get("samples_per_s_with_startup"))
        lines.append(f"| {c['name'][6:]} | {fmt(f.get('batch'))} | {fmt(f.get('steps'))} | {fmt(rate)} | "
                     f"{fmt(f.get('img_per_s_span'))} |")
    return lines + [""]
