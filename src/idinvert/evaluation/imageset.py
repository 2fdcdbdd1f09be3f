"""The held-out images of an evaluation: a prepared data set (with its labels), the photos of an invert
folder, or image files, folders and list files; all, the first N or N spread over the set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..engine.invert_folder import folder_images, is_invert_dir
from ..errors import ConfigError, ImageError
from ..images import expand_inputs, pil_to_tensor, read_images, resize_square
from ..datasets import ImageDataset, read_labels


@dataclass
class ImageSet:
    """The images of one evaluation, their names and (from a prepared set or a labels CSV) label rows."""

    names: list[str]
    images: torch.Tensor  # [N, 3, R, R] in [-1, 1]
    rows: list[dict] | None  # label rows, one per image
    source: str


def is_prepared(folder: Path) -> bool:
    return folder.is_dir() and (folder / "index.json").is_file() and (folder / "images.npy").is_file()


def subset_indices(total: int, count: int | None, spread: bool = False) -> list[int]:
    """The images used: all, the first ``count``, or ``count`` evenly spaced ones (first and last included)."""
    if count is None or count >= total:
        return list(range(total))
    if not spread:
        return list(range(count))
    return [int(i) for i in np.linspace(0, total - 1, count).round()]


def load_image_set(inputs: list[str], resolution: int, count: int | None, labels: Path | None,
                   spread: bool = False) -> ImageSet:
    """Images (and labels) from a prepared set or from image files, folders and list files."""
    if count is not None and count < 2:
        raise ConfigError("--count must be at least 2 (FID, SWD and pairs compare sets)")
    if len(inputs) == 1 and is_prepared(Path(inputs[0])):
        ds = ImageDataset(inputs[0])
        chosen = subset_indices(len(ds), count, spread)
        pixels = np.array(ds.images[chosen])  # [N, r, r, 3] uint8, copied out of the memory map
        if ds.resolution == resolution:
            images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        else:
            images = torch.stack([pil_to_tensor(resize_square(Image.fromarray(p), resolution)) for p in pixels])
        names = [Path(ds.names[i]).name for i in chosen]
        chosen_labels = [ds.labels[i] for i in chosen]
        rows = [dict(r) for r in chosen_labels] if any(chosen_labels) else None
        source = str(inputs[0])
    elif len(inputs) == 1 and is_invert_dir(Path(inputs[0])):  # the photos an `idinvert invert` run read
        paths, files = folder_images(Path(inputs[0]))
        chosen = subset_indices(len(paths), count, spread)
        images = read_images([paths[i] for i in chosen], resolution)
        names, rows, source = [files[i] for i in chosen], None, str(inputs[0])
    else:
        paths = expand_inputs(inputs)
        paths = [paths[i] for i in subset_indices(len(paths), count, spread)]
        images = read_images(paths, resolution)
        names, rows, source = [p.name for p in paths], None, ", ".join(map(str, inputs))
    if images.shape[0] < 2:
        raise ImageError(f"{source}: the evaluation needs at least 2 images, found {images.shape[0]}")
    if labels is not None:
        table = read_labels(labels, split=None)
        rows = [dict(table.get(name, {})) for name in names]
        if not any(rows):
            raise ConfigError(f"{labels}: no row's 'file' matches the images' names (e.g. {names[0]!r})")
    return ImageSet(names, images, rows, source)
