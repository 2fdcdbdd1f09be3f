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

from .version import __version__
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
    return cell.lower().endswith((".png", ".jpg", ".jpeg", ".gif"))


def _tables(report: "Report | list[Report]") -> list[Report]:
    return list(report) if isinstance(report, (list, tuple)) else [report]


def write_html(report: "Report | list[Report]", folder: Path, filename: str = "index.html", *,
               image_size: int = 160) -> None:
    """One HTML table per report (a page title from the first, a heading per further table)."""
    tables = _tables(report)
    parts = []
    for k, table in enumerate(tables):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in [""] + table.headers)
        body = []
        for name, cells in zip(table.row_names, table.rows):
            tds = [f'<th scope="row">{html.escape(name)}</th>']
            for cell in cells:
                if _is_image(cell):
                    tds.append(f'<td><a href="{html.escape(cell)}"><img src="{html.escape(cell)}" '
                               f'alt="{html.escape(cell)}" loading="lazy"></a></td>')
                else:
                    tds.append(f"<td>{html.escape(cell)}</td>")
            body.append("<tr>" + "".join(tds) + "</tr>")
        heading = f"<h1>{html.escape(table.title)}</h1>" if k == 0 else f"<h2>{html.escape(table.title)}</h2>"
        parts.append(f"{heading}\n<table><thead><tr>{head}</tr></thead><tbody>\n{chr(10).join(body)}\n"
                     f"</tbody></table>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(tables[0].title)}</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border:1px solid #ccc;padding:4px;text-align:center;font-size:13px}}th[scope=row]{{text-align:left;max-width:12em}}
img{{width:{image_size}px;height:{image_size}px;object-fit:contain;image-rendering:auto}}</style></head>
<body>{chr(10).join(parts)}
</body></html>
"""
    write_text(folder / filename, page)


def _text_width(draw: ImageDraw.ImageDraw, text: str) -> int:
    return int(draw.textlength(text))


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: int) -> list[str]:
    """Words of ``text`` in lines no wider than ``width`` pixels."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and _text_width(draw, trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def write_sheet(report: "Report | list[Report]", folder: Path, filename: str = "sheet.png", *,
                cell: int = 128) -> None:
    """A grid image: for each report its title, column headers over the tiles and row labels beside them."""
    tables = _tables(report)
    pad, line_h = 4, 13
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    name_w = min(180, max([_text_width(probe, n) for t in tables for n in t.row_names] + [0]) + 2 * pad)
    cols = max(len(t.headers) for t in tables)
    width = pad + name_w + cols * (cell + pad)
    header_h = [line_h * max([len(_wrap(probe, h, cell - 4)) for h in t.headers] + [1]) + pad for t in tables]
    title_h = line_h + 2 * pad
    height = sum(title_h + h + len(t.rows) * (cell + pad) for t, h in zip(tables, header_h)) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = pad
    for table, head_h in zip(tables, header_h):
        draw.text((pad, y), table.title, fill=(0, 0, 0))
        y += title_h
        for c, header in enumerate(table.headers):
            for i, text in enumerate(_wrap(draw, header, cell - 4)):
                draw.text((pad + name_w + c * (cell + pad) + 2, y + i * line_h), text, fill=(60, 60, 60))
        y += head_h
        for name, cells in zip(table.row_names, table.rows):
            lines = _wrap(draw, name, name_w - 2 * pad)
            for i, text in enumerate(lines[: cell // line_h]):
                draw.text((pad, y + cell // 2 - len(lines) * line_h // 2 + i * line_h), text, fill=(0, 0, 0))
            for c, item in enumerate(cells):
                x = pad + name_w + c * (cell + pad)
                if _is_image(item) and (folder / item).is_file():
                    with Image.open(folder / item) as tile:
                        sheet.paste(tile.convert("RGB").resize((cell, cell), RESAMPLE), (x, y))
                else:
                    for i, text in enumerate(_wrap(draw, item, cell - 4)[: cell // line_h]):
                        draw.text((x + 2, y + cell // 2 - 6 + i * line_h), text, fill=(0, 0, 0))
            y += cell + pad
    save_image(sheet, folder / filename)


def environment(device: torch.device | str) -> dict[str, Any]:
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"idinvert": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device), "device_name": name, "threads": torch.get_num_threads(),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def write_outputs(folder: Path, report: "Report | list[Report]", manifest: dict[str, Any], *,
                  cell: int = 128, image_size: int = 160) -> None:
    """``manifest.json``, ``sheet.png`` and ``index.html`` for a finished run (one or several tables)."""
    write_json(folder / "manifest.json", manifest)
    write_sheet(report, folder, cell=cell)
    write_html(report, folder, image_size=image_size)
