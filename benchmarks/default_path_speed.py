"""The time a person waits on the default path: ``idinvert demo`` end to end, and the editor from upload to a
faithful, editable face.

    python benchmarks/default_path_speed.py --out benchmarks/results/default_path_speed [--runs 3]

* demo: the installed ``idinvert demo`` (the bundled portrait, the default pack, tuning on) as a new process,
  once to warm the caches (not counted), then ``--runs`` times; wall time from launch to exit, and the demo's own
  breakdown from its manifest (align, encoder, inversion steps, tuning steps, edits, writing), plus one run with
  ``--no-refine`` for what tuning costs;
* editor: the app of ``idinvert serve`` in this process (Flask's test client, so no network in the figures), the
  same portrait uploaded as the page does it: upload (decode + face detection), inversion (100 steps), tuning
  (the page asks for it as soon as the inversion is ready) and the first edited render in the attribute's units
  (age +15 years, by the tuned generator); "upload → faithful" is the sum of the first three.

Run it on a quiet machine: the figures are wall-clock times.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_report  # noqa: E402

IDINVERT = Path(sys.executable).with_name("idinvert")


def run_demo(folder: Path, *extra: str) -> dict:
    began = time.perf_counter()
    subprocess.run([str(IDINVERT), "demo", "--out", str(folder), "--quiet", *extra], check=True)
    wall = time.perf_counter() - began
    manifest = json.loads((folder / "manifest.json").read_text())
    refine = manifest.get("refine") or {}
    steps = [row["steps"] for row in refine.get("per_image", [])]
    return {"wall": round(wall, 2), "timing": manifest["timing"], "tuning_steps": max(steps) if steps else 0}


def demo_figures(runs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_demo(Path(tmp) / "warm")
        measured = [run_demo(Path(tmp) / f"run{i}") for i in range(runs)]
        plain = run_demo(Path(tmp) / "plain", "--no-refine")
    sections = measured[0]["timing"].keys()
    return {"runs": measured, "no_refine": plain,
            "wall_median": statistics.median(r["wall"] for r in measured),
            "timing_median": {k: statistics.median(r["timing"][k] for r in measured) for k in sections}}


def wait(client, sid: str, done) -> dict:
    while True:
        status = client.get(f"/api/session/{sid}/status").get_json()
        slot = status["slots"]["a"]
        for key in ("job", "refine"):
            if slot.get(key) and slot[key]["state"] == "error":
                raise RuntimeError(slot[key]["message"])
        if done(slot):
            return slot
        time.sleep(0.02)


def editor_once(client, photo: bytes) -> dict:
    sid = client.post("/api/session").get_json()["session"]
    t0 = time.perf_counter()
    answer = client.post(f"/api/session/{sid}/photo/a", data={"file": (io.BytesIO(photo), "portrait.png")},
                         content_type="multipart/form-data")
    assert answer.status_code == 200, answer.get_json()
    t1 = time.perf_counter()
    client.post(f"/api/session/{sid}/a/invert", json={"face": 0})
    slot = wait(client, sid, lambda s: s["ready"])
    t2 = time.perf_counter()
    client.post(f"/api/session/{sid}/a/refine")
    slot = wait(client, sid, lambda s: s["faithful"])
    t3 = time.perf_counter()
    age = slot["faithful_readings"]["age"]
    rendered = client.post(f"/api/session/{sid}/render", json={"faithful": True, "amounts": {"age": age + 15}})
    assert rendered.status_code == 200, rendered.get_json()
    t4 = time.perf_counter()
    client.delete(f"/api/session/{sid}")
    return {"upload": round(t1 - t0, 2), "inversion": round(t2 - t1, 2), "tuning": round(t3 - t2, 2),
            "first_edit": round(t4 - t3, 2), "upload_to_faithful": round(t3 - t0, 2),
            "upload_to_first_edit": round(t4 - t0, 2), "tuned_in_s": slot["refine_seconds"]}


def editor_figures(runs: int) -> dict:
    import idinvert
    from idinvert.assets import bundled_portrait
    from idinvert.server.app import create_app

    buffer = io.BytesIO()
    bundled_portrait().save(buffer, format="PNG")
    app = create_app(idinvert.load_pack())
    try:
        client = app.test_client()
        editor_once(client, buffer.getvalue())  # warm-up: caches, first-call costs
        measured = [editor_once(client, buffer.getvalue()) for _ in range(runs)]
    finally:
        app.extensions["idinvert"].close()
    return {"runs": measured, "median": {k: statistics.median(r[k] for r in measured) for k in measured[0]}}


def markdown(report: dict) -> str:
    d, e = report["demo"], report["editor"]
    t = d["timing_median"]
    lines = ["# Speed of the default path", "",
             f"`{report['command']}` on {report['machine']}, {report['date']} (median of {report['runs']} runs after "
             "one warm-up).", "",
             "## `idinvert demo` (tuning on), target ≤ 45 s", "",
             f"End to end (process launch to exit): **{d['wall_median']:.1f} s**; without tuning (`--no-refine`): "
             f"{d['no_refine']['wall']:.1f} s. Tuning steps run: "
             f"{', '.join(str(r['tuning_steps']) for r in d['runs'])}.", "",
             "| section | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in t.items()]
    lines += ["", "Sections are the demo's own timer (inside the process); the end-to-end time adds starting Python "
              "and importing PyTorch.", "",
              "## The editor: photo upload → faithful, editable face, target ≤ 20 s", "",
              "| step | seconds |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v:.1f} |" for k, v in e["median"].items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/default_path_speed"))
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    report = {"command": "python benchmarks/default_path_speed.py " + " ".join(sys.argv[1:]),
              "machine": machine(), "date": time.strftime("%Y-%m-%d"), "runs": args.runs,
              "demo": demo_figures(args.runs), "editor": editor_figures(args.runs)}
    write_report(args.out.with_suffix(".json"), report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
