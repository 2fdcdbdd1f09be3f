"""What the benchmark scripts share: the machine line and writing a report (JSON, Markdown beside it)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch


def machine() -> str:
    """The processor (its model name where Linux says it), PyTorch's thread count and version, and the OS, as
    the reports print them."""
    return (f"{platform.processor() or platform.machine()}{cpu_model()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}, {platform.system()}")


def cpu_model() -> str:
    """`` (model name)`` from /proc/cpuinfo, or nothing where it cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return f" ({line.split(':', 1)[1].strip()})"
    except OSError:
        pass
    return ""


def write_report(out: Path, report: dict, markdown: str | None = None) -> None:
    """``report`` as JSON at ``out``; ``markdown``, if given, beside it as ``.md`` and on stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if markdown is not None:
        out.with_suffix(".md").write_text(markdown)
        print(markdown)
