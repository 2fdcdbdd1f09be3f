"""scripts/gpu_check.sh, the device check: its tiny form end to end on the CPU through the real script,
and the runner's isolation of a failing check."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_driver():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


gc = load_driver()

@pytest.mark.slow
def test_tiny_check_runs_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, IDINVERT_PYTHON=sys.executable)
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out), "--device", "cpu", "--tiny",
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.md", "gpu_check_logs.tar.gz"]
    report = json.loads((out / "gpu_check.json").read_text())
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert set(statuses.values()) == {"ok"}, statuses
    for name in ("setup/environment", "verbs/utkface64/invert-in-domain", "verbs/utkface64/invert-encoder",
                 "agreement/utkface64", "speed/inversion", "speed/encoder", "speed/pti"):
        assert name in statuses
    assert all({"name", "status", "seconds", "figures"} <= set(c) for c in report["checks"])
    assert report["cpu_rehearsal"] and report["summary"]["failed"] == 0
    agreement = next(c for c in report["checks"] if c["name"] == "agreement/utkface64")["figures"]
    assert [r["ok"] for r in agreement["rows"]] == [True] * 4
    speed = next(c for c in report["checks"] if c["name"] == "speed/inversion")["figures"]
    assert {r["dtype"] for r in speed["rows"]} == {"float32", "bfloat16"} and speed["flops_per_image_step"] > 0
    md = (out / "gpu_check.md").read_text()
    assert "CPU rehearsal" in md and "not measured on a GPU" in md and "8 s per image on a P40" in md


def test_a_failing_check_is_isolated_and_reported(tmp_path):
    ctx = gc.Context(out=tmp_path, work=tmp_path, device="cpu", mode="tiny", sizes=gc.TINY, env=dict(os.environ),
                     threads=1, deadline=None)

    def broken(ctx, limit):
        raise gc.CheckFailed("exit 2: idinvert: error: something broke", {"exit": 2})

    def crashing(ctx, limit):
        raise RuntimeError("first line\nthe last line")

    def skipped(ctx, limit):
        raise gc.Skip("needs ../shared")

    for check in (gc.Check("a", broken), gc.Check("b", lambda ctx, limit: {"x": 1}, ("a",)),
                  gc.Check("c", lambda ctx, limit: {"x": 2}), gc.Check("d", crashing), gc.Check("e", skipped),
                  gc.Check("e2", lambda ctx, limit: {}, ("e",))):
        gc.run_check(ctx, check)
    results = ctx.results
    assert results["a"]["status"] == "failed" and results["a"]["error"] == "exit 2: idinvert: error: something broke"
    assert results["a"]["figures"] == {"exit": 2}
    assert results["b"]["status"] == "failed" and "needs a" in results["b"]["error"]
    assert results["c"] == {"name": "c", "status": "ok", "seconds": results["c"]["seconds"], "figures": {"x": 2}}
    assert results["d"]["error"] == "RuntimeError: the last line"
    assert results["e"]["status"] == "skipped" and results["e"]["reason"] == "needs ../shared"
    assert results["e2"]["status"] == "skipped" and "needs e" in results["e2"]["reason"]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["summary"] == {"ok": 1, "failed": 3, "skipped": 2}
    assert "## Failures" in (tmp_path / "gpu_check.md").read_text()
    # past the time budget nothing more starts
    ctx.deadline = time.monotonic()
    gc.run_check(ctx, gc.Check("f", lambda ctx, limit: {}))
    assert "time budget" in results["f"]["error"]


def test_a_command_past_its_limit_is_stopped(tmp_path):
    (tmp_path / "cwd").mkdir()
    ctx = gc.Context(out=tmp_path, work=tmp_path, device="cpu", mode="tiny", sizes=gc.TINY, env=dict(os.environ),
                     threads=1, deadline=None)
    start = time.perf_counter()
    with pytest.raises(gc.CheckFailed, match="timed out after 1 s"):
        gc.run_logged(ctx, "sleepy", [sys.executable, "-c", "import time; print('waiting'); time.sleep(60)"], 1.0)
    assert time.perf_counter() - start < 30


def test_training_rate_from_a_run_log(tmp_path):
    rows = [{"step": 1, "images": 32, "seconds": 0.5, "img_per_s": 64.0},
            {"step": 20, "images": 640, "seconds": 2.0, "img_per_s": 400.0},
            {"step": 40, "images": 1280, "seconds": 3.6, "img_per_s": 410.0}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert gc.log_rate(tmp_path / "log.jsonl") == {"img_per_s": 410.0, "images": 1280, "img_per_s_span": 400.0}
    assert gc.log_rate(tmp_path / "missing.jsonl") == {"img_per_s": None}
