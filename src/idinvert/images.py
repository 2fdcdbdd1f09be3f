"""Every conversion between image files and tensors.

Inside the library images are NCHW float tensors, RGB, in [-1, 1]. Reading accepts any size
and mode (RGB, RGBA, palette, grey, 16-bit), applies the EXIF orientation, centre-crops
non-square images to a square and resizes with Lanczos (antialiased) resampling. Writing
uses the official post-processing ``clip((x + 1)·127.5 + 0.5, 0, 255)`` truncated to uint8,
and files are written atomically.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import IdinvertError, ImageError
from .fileio import atomic_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
LIST_EXTENSIONS = (".txt", ".list", ".lst")
RESAMPLE = Image.Resampling.LANCZOS  # the stated resize filter
MAX_PIXELS = 50_000_000  # images with more pixels are refused before decoding (decompression bombs)
MIN_SIDE = 16  # images with a shorter side hold too little to invert or align


def decode_image(source: str | os.PathLike | bytes, *, name: str | None = None, max_pixels: int = MAX_PIXELS,
                 min_side: int = MIN_SIDE, max_side: int | None = None) -> Image.Image:
    """Every image file read by idinvert goes through here: 8-bit RGB, EXIF orientation applied.

    The size in the header is checked before anything is decoded: more than ``max_pixels`` pixels
    or a side under ``min_side`` is refused with an ``ImageError`` naming the limit. With
    ``max_side``, larger images are shrunk while decoding (JPEG's draft mode) and then resized,
    so that only the shrunk photo is kept in memory.
    """
    name = name or (str(source) if not isinstance(source, bytes) else "the image")
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{path}: no such file")
        if path.is_dir():
            raise ImageError(f"{path} is a folder, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageError(f"{name}: {width}×{height} pixels is over the limit of {max_pixels / 1e6:g} "
                                     f"megapixels; use a smaller image")
                if min(width, height) < min_side:
                    raise ImageError(f"{name}: {width}×{height} pixels; use an image at least {min_side} pixels "
                                     f"a side")
                if max_side is not None and max(width, height) > max_side and img.format == "JPEG":
                    img.draft("RGB", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale
                img.load()
                rgb = to_rgb(ImageOps.exif_transpose(img))
    except IdinvertError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: over the limit of {max_pixels / 1e6:g} megapixels; use a smaller image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise ImageError(f"{name}: unreadable or truncated image ({str(exc)[:100]})") from None
    if max_side is not None and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), RESAMPLE)
    return rgb


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open any readable image as 8-bit RGB with its EXIF orientation applied (``decode_image``)."""
    return decode_image(path)


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode; transparency is composited onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def center_crop_square(img: Image.Image) -> Image.Image:
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side))


def resize_square(img: Image.Image, size: int) -> Image.Image:
    img = center_crop_square(img)
    return img if img.size == (size, size) else img.resize((size, size), RESAMPLE)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image → ``[3, H, W]`` float in [-1, 1] (``x / 127.5 − 1``)."""
    array = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` or ``[3, H, W]`` in [-1, 1] → uint8 ``[N, H, W, 3]`` / ``[H, W, 3]``."""
    x = images.detach().float().cpu()
    x = torch.clamp((x + 1.0) * 127.5 + 0.5, 0, 255).to(torch.uint8)
    return (x.permute(0, 2, 3, 1) if x.ndim == 4 else x.permute(1, 2, 0)).numpy()


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    if image.ndim != 3:
        raise ValueError(f"expected one image [3, H, W], got {list(image.shape)}")
    return Image.fromarray(tensor_to_uint8(image))


def read_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """One image file → ``[3, size, size]`` in [-1, 1] (centre crop, Lanczos resize)."""
    return pil_to_tensor(resize_square(open_image(path), size))


def read_images(paths: Sequence[str | os.PathLike], size: int) -> torch.Tensor:
    """Image files → ``[N, 3, size, size]`` in [-1, 1]."""
    if not paths:
        raise ImageError("no input images")
    return torch.stack([read_image(p, size) for p in paths])


def save_image(image: torch.Tensor | Image.Image, path: str | os.PathLike) -> None:
    """Write one image (tensor in [-1, 1] or PIL) atomically; the format follows the suffix."""
    img = image if isinstance(image, Image.Image) else tensor_to_pil(image)
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def make_grid(images: Sequence[torch.Tensor | Image.Image] | torch.Tensor, columns: int,
              *, cell: int | None = None, padding: int = 2, background: int = 255) -> Image.Image:
    """Tile images row by row into one picture (``cell`` resizes each tile)."""
    tiles = [im if isinstance(im, Image.Image) else tensor_to_pil(im) for im in images]
    if not tiles:
        raise ValueError("no images to tile")
    side = cell or max(max(t.size) for t in tiles)
    tiles = [t if t.size == (side, side) else t.resize((side, side), RESAMPLE) for t in tiles]
    columns = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (side + padding) + padding, rows * (side + padding) + padding),
                      (background,) * 3)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet.paste(tile, (padding + c * (side + padding), padding + r * (side + padding)))
    return sheet


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files from files, folders (sorted, not recursive) and list files (one path per line,
    relative to the list file's folder unless absolute)."""
    paths: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and is_image_file(p))
            if not found:
                raise ImageError(f"{item}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths.extend(found)
        elif item.suffix.lower() in LIST_EXTENSIONS and item.is_file():
            lines = [ln.strip() for ln in item.read_text(encoding="utf-8").splitlines()]
            entries = [Path(ln) for ln in lines if ln and not ln.startswith("#")]
            if not entries:
                raise ImageError(f"{item}: the list file names no images")
            paths.extend(e if e.is_absolute() else item.parent / e for e in entries)
        elif not item.exists():
            raise ImageError(f"{item}: no such file or folder")
        else:
            paths.append(item)
    if not paths:
        raise ImageError("no input images")
    return paths


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Output names from file stems: safe characters only, made unique with ``_2``, ``_3`` … skipping
    names already taken (``face``, ``face``, ``face_2`` → ``face``, ``face_2``, ``face_2_2``)."""
    from .safety import unique_names as unique

    return unique([Path(p).stem for p in paths])
