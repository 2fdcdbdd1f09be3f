"""The invert folder: what ``idinvert invert`` writes and every verb that edits photos reads.

    codes.npy               [N, L, C] float32, one row per image in input order (memory-mappable)
    encoder_codes.npy       [N, L, C] E(x), when the method ran an encoder
    manifest.json           names, inputs, model, settings, seed, per-image losses and steps, timing,
                            environment, and what a resume compares (settings_fingerprint, keys)
    <name>_{ori,enc,inv}.png   the image as inverted, G(E(x)) and G(codes), unless inverted with --no-images
    index.html, sheet.png   the report over those PNGs (the sheet shows the first rows only)

After pivotal tuning (``tune_folder``) it also holds, for each tuned image, ``<name>_tuned.safetensors``
(its non-zero weight deltas, float16: ``engine.tuned``) and ``<name>_pti.png`` (its reconstruction by
them), and a ``refine`` entry in the manifest::

    "refine": {"method": "pti", "settings": {...}, "base": "<generator fingerprint>",
               "files": {"<name>": "<name>_tuned.safetensors" | null}, "per_image": [{steps, mse/lpips
               before/after}], "seconds": ..., "seconds_per_image": ..., "dtype": "float16"}

``engine.dataset_inversion`` assembles a data set's shards into a folder with ``code_arrays`` and
``write_report``; ``read_folder`` reads one back for a pack (``Inverted``), each image with its tuned
generator when it has one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import ConfigError, ImageError
from ..fileio import atomic_path, write_json
from ..images import read_image, read_images, save_image
from ..report import Report, write_html, write_sheet
from ..safety import check_names, load_npy, npy_header, read_json
from .refine import RefineConfig, RefineResult, refine
from .tuned import TunedWeights, load_tuned, save_tuned

MANIFEST, CODES, ENCODER_CODES = "manifest.json", "codes.npy", "encoder_codes.npy"
SHEET_ROWS = 100  # the contact sheet shows the first rows only (a 20,000-row PNG is of no use)
TUNED_SHEET_ROWS = 64  # … and fewer once a fourth column (the tuned reconstruction) is added


def image_file(name: str, kind: str) -> str:
    """``<name>_<kind>.png``: kind ``ori`` (as inverted), ``enc`` (G(E(x))), ``inv`` (G(codes)), ``pti`` (tuned)."""
    return f"{name}_{kind}.png"


def tuned_file(name: str) -> str:
    return f"{name}_tuned.safetensors"


# --- writing ----------------------------------------------------------------------------------------

def code_arrays(folder: Path, kinds: list[str], count: int, code_shape: tuple[int, int]) -> dict[str, np.memmap]:
    """``codes.npy`` / ``encoder_codes.npy`` (``kinds``: "codes", "encoder_codes") as float32 memory maps
    ``[count, L, C]`` to fill row by row; flush them before the manifest is written."""
    return {k: np.lib.format.open_memmap(folder / f"{k}.npy", mode="w+", dtype=np.float32,
                                         shape=(count, *code_shape)) for k in kinds}


def write_manifest(folder: Path, manifest: dict) -> None:
    write_json(folder / MANIFEST, manifest)


def write_report(folder: Path, names: list[str], *, tuned: bool = False) -> None:
    """index.html (every image) and sheet.png (the first rows) over the PNGs in ``folder``; ``tuned`` adds
    the column of the tuned reconstructions."""
    headers = ["Original", "Encoder output", "Inversion"] + (["Inversion + PTI"] if tuned else [])
    report = Report(title="Inversion", headers=headers)
    for name in names:
        enc = image_file(name, "enc") if (folder / image_file(name, "enc")).is_file() else ""
        cells = [image_file(name, "ori"), enc, image_file(name, "inv")]
        report.add_row(name, cells + ([image_file(name, "pti")] if tuned else []))
    write_html(report, folder)
    rows = TUNED_SHEET_ROWS if tuned else SHEET_ROWS
    write_sheet(Report(report.title, report.headers, report.rows[:rows], report.row_names[:rows]), folder)


def tuning_entry(result: RefineResult, files: dict[str, str | None] | None = None) -> dict:
    """The manifest's ``refine`` entry of a tuning run (with ``files`` when they were written)."""
    n = result.codes.shape[0]
    entry = {"method": result.config.method, "settings": asdict(result.config)}
    if files is not None:
        entry |= {"base": result.base, "files": files, "dtype": "float16"}
    return entry | {"per_image": result.report(), "seconds": round(result.seconds, 3),
                    "seconds_per_image": round(result.seconds / max(n, 1), 3)}


def write_tuning(folder: Path, names: list[str], result: RefineResult, *, images: bool = True) -> dict:
    """``<name>_tuned.safetensors`` (images whose generator changed) and, with ``images``, ``<name>_pti.png``
    per image; returns the manifest's ``refine`` entry."""
    files: dict[str, str | None] = {}
    changed = result.tuned.changed().tolist()
    for i, name in enumerate(names):
        if images:
            save_image(result.reconstructions[i], folder / image_file(name, "pti"))
        files[name] = None
        if changed[i]:
            with atomic_path(folder / tuned_file(name)) as tmp:
                save_tuned(tmp, {k: v[i] for k, v in result.tuned.deltas.items()}, base=result.base)
            files[name] = tuned_file(name)
    return tuning_entry(result, files)


Tune = Callable[[torch.Tensor, torch.Tensor], RefineResult]  # (images, pivot codes) → tuning


def tune_folder(folder: Path, pack, config: RefineConfig, *, batch_size: int, tune: Tune | None = None
                ) -> RefineResult | None:
    """Tune the generators of a finished invert folder in place: the tuned files and PNGs first, then the
    manifest that names them (atomically), then index.html and sheet.png with the new column. ``tune``
    replaces ``refine(images, codes, pack, config, batch_size=batch_size)`` (a progress bar, say).
    Returns None when the folder is already tuned with these settings."""
    manifest, names, codes = read_codes(folder, pack)  # names pass the name check: files stay inside
    previous = manifest.get("refine")
    if isinstance(previous, dict) and previous.get("settings") == asdict(config) and previous.get("base"):
        return None
    originals = [folder / image_file(n, "ori") for n in names]
    if all(p.is_file() for p in originals):  # what was inverted (at the model's resolution)
        images = torch.stack([read_image(p, pack.resolution) for p in originals])
    else:  # --no-images: the inputs again
        inputs = manifest.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != len(names) or not all(isinstance(p, str) for p in inputs):
            raise ConfigError(f"{folder}/manifest.json: 'inputs' must list the {len(names)} input files; run "
                              f"`idinvert invert` again")
        images = read_images([Path(p) for p in inputs], pack.resolution)
    result = (tune or (lambda x, c: refine(x, c, pack, config, batch_size=batch_size)))(images, codes)
    manifest["refine"] = write_tuning(folder, names, result, images=manifest.get("images", True))
    write_manifest(folder, manifest)
    if (folder / "index.html").is_file():
        write_report(folder, names, tuned=True)
    return result


# --- reading ----------------------------------------------------------------------------------------

@dataclass
class Inverted:
    """Codes and originals from an invert folder (or photos inverted on the spot)."""

    names: list[str]
    codes: torch.Tensor  # [N, L, C]
    originals: torch.Tensor  # [N, 3, R, R]
    source: str
    tuned: TunedWeights | None = None  # each image's tuned generator (invert --refine), else None


def is_invert_dir(folder: Path) -> bool:
    return folder.is_dir() and (folder / CODES).is_file() and (folder / MANIFEST).is_file()


def read_folder(folder: Path, pack) -> Inverted:
    """An invert folder's codes (on the pack's device), original images and tuned generators, checked
    against ``pack``."""
    manifest, names, codes = read_codes(folder, pack)
    originals = torch.stack([read_image(p, pack.resolution) for p in original_files(folder, manifest, names)])
    return Inverted(names, codes.to(pack.device), originals, str(folder), folder_tuning(folder, manifest, pack))


def read_codes(folder: Path, pack) -> tuple[dict, list[str], torch.Tensor]:
    """An invert folder's manifest, names and codes ``[N, L, C]`` (on the CPU), checked against the pack."""
    manifest_path, codes_path = folder / MANIFEST, folder / CODES
    if not codes_path.is_file() or not manifest_path.is_file():
        raise ConfigError(f"{folder} is not an invert output folder (codes.npy or manifest.json missing); "
                          f"run `idinvert invert` first or pass image files")
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict) or "names" not in manifest:
        raise ConfigError(f"{manifest_path} has no 'names'; run `idinvert invert` again")
    shape, _, _ = npy_header(codes_path)  # checked before the codes are read
    if len(shape) != 3 or tuple(shape[1:]) != pack.code_shape:
        raise ConfigError(f"{codes_path} holds codes {list(shape)}, but the model takes "
                          f"[N, {pack.code_shape[0]}, {pack.code_shape[1]}]; invert with this model")
    names = check_names(manifest["names"], str(manifest_path), count=shape[0])
    codes = torch.from_numpy(load_npy(codes_path)).float()
    if not torch.isfinite(codes).all():
        raise ConfigError(f"{codes_path} holds NaN or infinite codes; run `idinvert invert` again")
    return manifest, names, codes


def folder_images(folder: Path) -> tuple[list[Path], list[str]]:
    """An invert folder's original images, in its order, and their input file names (the names a
    labels CSV uses), for measuring the photos themselves (``idinvert evaluate``)."""
    manifest = read_json(folder / MANIFEST)
    if not isinstance(manifest, dict):
        raise ConfigError(f"{folder / MANIFEST} is not an invert manifest; run `idinvert invert` again")
    names = check_names(manifest.get("names"), str(folder / MANIFEST))
    inputs = manifest.get("inputs")
    files = [Path(inputs[i]).name if isinstance(inputs, list) and len(inputs) == len(names)
             and isinstance(inputs[i], str) else f"{name}.png" for i, name in enumerate(names)]
    return original_files(folder, manifest, names), files


def original_files(folder: Path, manifest: dict, names: list[str]) -> list[Path]:
    """The original image of each name: ``<name>_ori.png``, or the input file for a folder written
    with --no-images (as given, else its resolved path from the manifest's keys)."""
    inputs, keys = manifest.get("inputs"), manifest.get("keys")
    paths = []
    for i, name in enumerate(names):
        candidates = [folder / image_file(name, "ori")]
        if isinstance(inputs, list) and len(inputs) == len(names) and isinstance(inputs[i], str):
            candidates.append(Path(inputs[i]))
        if isinstance(keys, list) and len(keys) == len(names) and isinstance(keys[i], str):
            candidates.append(Path(keys[i].split("\t")[0]))
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ImageError(f"{folder} has no {name}_ori.png (inverted with --no-images?) and its input image "
                             f"{candidates[-1]} is gone; restore it or invert again without --no-images")
        paths.append(found)
    return paths


def folder_tuning(folder: Path, manifest: dict, pack) -> TunedWeights | None:
    """The tuned generators an invert folder's manifest lists (``None`` when it lists none)."""
    entry = manifest.get("refine")
    if not entry:
        return None
    files = entry.get("files") if isinstance(entry, dict) else None
    names = check_names(manifest.get("names"), f"{folder}/manifest.json")
    if not isinstance(files, dict) or any(not (f is None or isinstance(f, str)) for f in files.values()):
        raise ConfigError(f"{folder}/manifest.json: 'refine.files' must map image names to files; "
                          f"run `idinvert invert --refine pti` again")
    paths = []
    for name in names:
        relative = files.get(name)
        if relative is not None and (Path(relative).name != relative or not relative.endswith(".safetensors")):
            raise ConfigError(f"{folder}/manifest.json lists {relative!r} as tuned weights: expected a "
                              f".safetensors file inside the folder")
        paths.append(folder / relative if relative else None)
    if all(p is None for p in paths):
        return None
    return load_tuned(paths, pack.generator).to(pack.device)
