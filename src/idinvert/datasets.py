"""Prepared data sets: image folders, tar files or list files, decoded once into a fast cache.

``prepare_dataset`` decodes every image once, centre-crops and resizes it (or aligns its largest face
to a framing) and stores the pixels as one uint8 array ``[N, R, R, 3]`` (``images.npy``) beside an index
(``index.json``: names, optional labels, skipped files). Corrupt files are reported and skipped. A
label CSV (``file`` column plus any others) can select rows, e.g. ``split=train``; rows marked
``duplicate_of_earlier=1`` are always skipped. ``ImageDataset`` reads one back (memory-mapped); training,
the attribute predictor, the evaluation and the benchmarks all read data sets this way.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from .align import align_face, detect_faces
from .errors import ConfigError, ImageError
from .fileio import atomic_path, write_json
from .images import IMAGE_EXTENSIONS, LIST_EXTENSIONS, MAX_PIXELS, resize_square, tensor_to_uint8, to_rgb
from .safety import mark_output_dir


@dataclass
class SourceItem:
    name: str  # file name as listed (tar member name or path relative to the source)
    read: Callable[[], bytes]


def iter_source(source: str | os.PathLike) -> Iterator[SourceItem]:
    """Yield the image files of a folder (recursive), a tar file or a list file, in sorted order."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        for p in files:
            yield SourceItem(str(p.relative_to(source)), p.read_bytes)
    elif source.is_file() and tarfile.is_tarfile(source):
        with tarfile.open(source) as tar:
            members = sorted((m for m in tar.getmembers()
                              if m.isfile() and Path(m.name).suffix.lower() in IMAGE_EXTENSIONS),
                             key=lambda m: m.name)
            for m in members:
                yield SourceItem(m.name, lambda m=m: tar.extractfile(m).read())
    elif source.is_file() and source.suffix.lower() in LIST_EXTENSIONS:
        for line in source.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line) if Path(line).is_absolute() else source.parent / line
                yield SourceItem(line, p.read_bytes)
    else:
        raise ImageError(f"{source}: expected an image folder, a tar file or a list file")


def read_labels(path: str | os.PathLike, *, split: str | None) -> dict[str, dict[str, str]]:
    """Rows of a label CSV keyed by the basename of ``file``, filtered by ``split`` and duplicates."""
    rows = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "file" not in reader.fieldnames:
            raise ConfigError(f"{path}: a label CSV needs a 'file' column")
        if split is not None and "split" not in reader.fieldnames:
            raise ConfigError(f"{path}: no 'split' column to select {split!r} from")
        for row in reader:
            if split is not None and row.get("split") != split:
                continue
            if row.get("duplicate_of_earlier") == "1":
                continue
            rows[Path(row["file"]).name] = row
    return rows


def _decode(data: bytes, resolution: int, framing=None) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        if img.width * img.height > MAX_PIXELS:  # checked before decoding (decompression bombs)
            raise ImageError(f"{img.width}×{img.height} pixels is over the limit of {MAX_PIXELS / 1e6:g} megapixels")
        img.load()
        rgb = to_rgb(img)
    if framing is None:
        return np.asarray(resize_square(rgb, resolution), dtype=np.uint8)
    faces = detect_faces(rgb)
    if not faces:
        raise ImageError("no face found")
    largest = max(faces, key=lambda f: f.size)
    return tensor_to_uint8(align_face(rgb, largest, framing.with_size(resolution)).image)


def dataset_key(source: str | os.PathLike, resolution: int, labels: str | None, split: str | None) -> str:
    src = Path(source).resolve()
    stat = src.stat()
    text = f"{src}|{stat.st_size}|{int(stat.st_mtime)}|{resolution}|{labels}|{split}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def prepare_dataset(source: str | os.PathLike, out_dir: str | os.PathLike, *, resolution: int,
                    labels: str | os.PathLike | None = None, split: str | None = None,
                    limit: int | None = None, framing=None,
                    progress: Callable[[int], None] | None = None) -> Path:
    """Decode, crop and resize every image once into ``out_dir`` (``images.npy`` + ``index.json``).

    With ``labels``, only files listed in the CSV (after the split/duplicate filter) are kept
    and their rows are stored in the index. With ``framing`` (an ``align.Framing``), the largest
    face of each photo is aligned to it instead of centre-cropping; photos without a face are
    skipped and reported. Returns ``out_dir``; reuses it if already complete.
    """
    out_dir = Path(out_dir)
    if (out_dir / "index.json").is_file() and (out_dir / "images.npy").is_file():
        return out_dir
    label_rows = read_labels(labels, split=split) if labels else None
    arrays, names, rows, skipped = [], [], [], []
    for item in iter_source(source):
        base = Path(item.name).name
        if label_rows is not None and base not in label_rows:
            continue
        try:
            arrays.append(_decode(item.read(), resolution, framing))
        except Exception as exc:  # any decoding failure: report and skip, never stop the preparation
            skipped.append({"file": item.name, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
            warnings.warn(f"skipping unreadable image {item.name}: {skipped[-1]['error']}")
            continue
        names.append(item.name)
        rows.append(label_rows[base] if label_rows is not None else {})
        if progress is not None:
            progress(len(names))
        if limit is not None and len(names) >= limit:
            break
    if not names:
        raise ImageError(f"{source}: no usable images found")
    out_dir.mkdir(parents=True, exist_ok=True)
    mark_output_dir(out_dir)  # idinvert's folder: a later prepare-data may replace its files
    with atomic_path(out_dir / "images.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.stack(arrays))
    write_json(out_dir / "index.json", {"source": str(source), "resolution": resolution, "split": split,
                                        "framing": framing.to_dict() if framing is not None else None,
                                        "names": names, "labels": rows, "skipped": skipped})
    return out_dir


class ImageDataset:
    """A prepared cache: ``len()``, ``images`` uint8 ``[N, R, R, 3]`` (memory-mapped), labels."""

    def __init__(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        if not (folder / "index.json").is_file():
            raise ConfigError(f"{folder} is not a prepared dataset (run prepare first)")
        self.folder = folder
        self.index = json.loads((folder / "index.json").read_text())
        self.images = np.load(folder / "images.npy", mmap_mode="r")
        self.resolution = int(self.index["resolution"])
        self.names: list[str] = self.index["names"]
        self.labels: list[dict] = self.index["labels"]

    def __len__(self) -> int:
        return len(self.names)

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        """uint8 rows → float ``[B, 3, R, R]`` in [-1, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(self.images[indices]))
        return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


class ImageDatasets:
    """Several prepared caches at one resolution read as one (in the order given): ``len()``, ``batch``,
    ``names`` and ``labels`` like an ``ImageDataset``; the images are concatenated in memory once."""

    def __init__(self, folders: list[str | os.PathLike]) -> None:
        parts = [ImageDataset(f) for f in folders]
        if not parts:
            raise ConfigError("no prepared data set given")
        sizes = {p.resolution for p in parts}
        if len(sizes) > 1:
            raise ConfigError(f"the prepared data sets have different resolutions ({sorted(sizes)}); prepare "
                              f"them at one")
        self.parts = parts
        self.resolution = parts[0].resolution
        self.images = parts[0].images if len(parts) == 1 else np.concatenate([p.images for p in parts])
        self.names = [n for p in parts for n in p.names]
        self.labels = [row for p in parts for row in p.labels]

    def __len__(self) -> int:
        return len(self.names)

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        """uint8 rows → float ``[B, 3, R, R]`` in [-1, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(self.images[indices]))
        return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
