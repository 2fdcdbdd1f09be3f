"""Run reports: ``manifest.json``, the contact sheet ``sheet.png`` and ``index.html``.

A ``Report`` is a table: column headers and rows of cells, each cell an image (a file name
inside the output folder) or text. The same table becomes the sheet and the HTML page, so
every verb documents its output the same way.
"""

from __future__ import annotations

import datetime
import html
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from . import __version__
from .fileio import write_json, write_text
from .images import RESAMPLE, save_image


@dataclass
class Report:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)  # cells: image file names or text
    row_names: list[str] = field(default_factory=list)

    def add_row(self, name: str, cells: list[str]) -> None:
        if len(cells) != len(self.headers):
            raise ValueError(f"row {name!r} has {len(cells)} cells for {len(self.headers)} columns")
        self.row_names.append(name)
        self.rows.append(cells)


def _is_image(cell: str) -> bool:
    return cell.lower().endswith((".png", ".jpg", ".jpeg"))


def write_html(report: Report, folder: Path, filename: str = "index.html") -> None:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["Name"] + report.headers)
    body = []
    for name, cells in zip(report.row_names, report.rows):
        tds = [f"<td>{html.escape(name)}</td>"]
        for cell in cells:
            if _is_image(cell):
                tds.append(f'<td><a href="{html.escape(cell)}"><img src="{html.escape(cell)}" '
                           f'alt="{html.escape(cell)}" loading="lazy"></a></td>')
            else:
                tds.append(f"<td>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(report.title)}</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px;text-align:center;font-size:13px}}
img{{width:160px;height:160px;image-rendering:auto}}</style></head>
<body><h1>{html.escape(report.title)}</h1>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""
    write_text(folder / filename, page)


def write_sheet(report: Report, folder: Path, filename: str = "sheet.png", *, cell: int = 128) -> None:
    """A grid image of the report: a header line, then one row of tiles per table row."""
    pad, label_h, name_w = 4, 18, 0
    cols = len(report.headers)
    width = pad + cols * (cell + pad) + name_w
    height = label_h + len(report.rows) * (cell + pad) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, header in enumerate(report.headers):
        draw.text((pad + c * (cell + pad) + 2, 3), header[: cell // 7], fill=(0, 0, 0))
    for r, cells in enumerate(report.rows):
        y = label_h + r * (cell + pad)
        for c, item in enumerate(cells):
            x = pad + c * (cell + pad)
            if _is_image(item) and (folder / item).is_file():
                with Image.open(folder / item) as tile:
                    sheet.paste(tile.convert("RGB").resize((cell, cell), RESAMPLE), (x, y))
            else:
                draw.text((x + 2, y + cell // 2 - 6), item[: cell // 7], fill=(0, 0, 0))
    save_image(sheet, folder / filename)


def environment(device: torch.device | str) -> dict[str, Any]:
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"idinvert": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device), "device_name": name, "threads": torch.get_num_threads(),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def write_outputs(folder: Path, report: Report, manifest: dict[str, Any]) -> None:
    """``manifest.json``, ``sheet.png`` and ``index.html`` for a finished run."""
    write_json(folder / "manifest.json", manifest)
    write_sheet(report, folder)
    write_html(report, folder)
