"""Every conversion between image files and tensors.

Inside the library images are NCHW float tensors, RGB, in [-1, 1]. Reading accepts any size
and mode (RGB, RGBA, palette, grey, 16-bit), applies the EXIF orientation, centre-crops
non-square images to a square and resizes with Lanczos (antialiased) resampling. Writing
uses the official post-processing ``clip((x + 1)·127.5 + 0.5, 0, 255)`` truncated to uint8,
and files are written atomically.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import threading
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import IdinvertError, ImageError
from .fileio import atomic_path
from .safety import unique_names as safe_unique_names

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
LIST_EXTENSIONS = (".txt", ".list", ".lst")
RESAMPLE = Image.Resampling.LANCZOS  # the stated resize filter
MAX_PIXELS = 50_000_000  # images with more pixels are refused before decoding (decompression bombs)
MIN_SIDE = 16  # images with a shorter side hold too little to invert or align
EXIF_ORIENTATION = 0x0112  # the EXIF tag exif_transpose follows


DECODE_BUDGET_BYTES = 1024**3  # decoded pixels and their working copies, all decodes of a process together
DECODE_WAIT_SECONDS = 30.0  # how long a decode waits for others to finish before it gives up
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2,
               "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "I": 4, "F": 4}
WORKING_BYTES = 11  # per pixel beyond the decoded one: the RGB result, an 8-bit or RGBA step, the crop


class DecodeBusy(ImageError):
    """Too many large images are being decoded at once (or memory ran out): try again shortly."""


class DecodeBudget:
    """The memory that decodes running at the same time may use together, counted from the headers
    before decoding: an image that would not fit waits for others to finish (the editor decodes uploads
    on many threads; four 16-bit 7000×7000 PNGs of 95 KB each are 4 × 0.4 GB decoded)."""

    def __init__(self, limit: int = DECODE_BUDGET_BYTES) -> None:
        self.limit, self.used = limit, 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, nbytes: int, name: str, wait: float | None = None) -> Iterator[None]:
        wait = DECODE_WAIT_SECONDS if wait is None else wait
        if nbytes > self.limit:
            raise ImageError(f"{name}: decoding it needs {nbytes / 1e9:.2f} GB, over the limit of "
                             f"{self.limit / 1e9:.2f} GB; use a smaller image")
        with self._cond:
            if not self._cond.wait_for(lambda: self.used + nbytes <= self.limit, timeout=wait):
                raise DecodeBusy(f"{name}: other large images are being decoded; try again in a moment")
            self.used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()
            if nbytes > 64 * 1024 * 1024:
                _release_memory()  # glibc keeps a freed 0.5 GB decode otherwise


def _release_memory() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused by the process instead
        pass


DECODE_BUDGET = DecodeBudget()  # shared by every decode of this process (the editor's threads included)


def decode_image(source: str | os.PathLike | bytes, *, name: str | None = None, max_pixels: int = MAX_PIXELS,
                 min_side: int = MIN_SIDE, max_side: int | None = None,
                 budget: DecodeBudget | None = None) -> Image.Image:
    """Every image file read by idinvert goes through here: 8-bit RGB, EXIF orientation applied.

    The size in the header is checked before anything is decoded: more than ``max_pixels`` pixels
    or a side under ``min_side`` is refused with an ``ImageError`` naming the limit. With
    ``max_side``, larger images are shrunk while decoding (JPEG's draft mode) and then resized,
    so that only the shrunk photo is kept in memory. The memory a decode needs is reserved in
    ``budget`` (default: the process's ``DECODE_BUDGET``) first, so concurrent decodes cannot add
    up beyond it; ``DecodeBusy`` when it stays full (or memory runs out).
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
                pixels = img.size[0] * img.size[1]
                need = pixels * (_MODE_BYTES.get(img.mode, 8) + WORKING_BYTES)
                with (budget or DECODE_BUDGET).reserve(need, name):
                    img.load()
                    if img.getexif().get(EXIF_ORIENTATION, 1) not in (None, 1):
                        img = ImageOps.exif_transpose(img)  # a copy: only when the photo is rotated or mirrored
                    rgb = to_rgb(img)
                    if max_side is not None and max(rgb.size) > max_side:
                        rgb.thumbnail((max_side, max_side), RESAMPLE)
    except IdinvertError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: over the limit of {max_pixels / 1e6:g} megapixels; use a smaller image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (or a format Pillow cannot read)") from None
    except MemoryError:
        raise DecodeBusy(f"{name}: not enough memory to decode it now; try again or use a smaller image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name}: unreadable or truncated image ({str(exc)[:100]})") from None
    return rgb


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open any readable image as 8-bit RGB with its EXIF orientation applied (``decode_image``)."""
    return decode_image(path)


def _grey_to_uint8(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grey image as 8-bit ``L``, a band of rows at a time, so that
    a 7000×7000 16-bit PNG needs its own 98 MB and the 49 MB result, not gigabytes of float64 copies."""
    width, height = img.size
    rows = max(1, (1 << 21) // max(width, 1))  # about 2 M pixels (16 MB of float64) per band
    bands = [(y, min(y + rows, height)) for y in range(0, height, rows)]
    peak = 65535.0
    if not img.mode.startswith("I;16"):
        top = max(float(np.asarray(img.crop((0, a, width, b)), dtype=np.float64).max()) for a, b in bands)
        peak = 65535.0 if top > 255 else 255.0
    out = np.empty((height, width), dtype=np.uint8)
    for a, b in bands:
        band = np.asarray(img.crop((0, a, width, b)), dtype=np.float64)
        out[a:b] = np.clip(band / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode; transparency is composited onto white. An RGB image is returned
    as it is (no copy)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _grey_to_uint8(img).convert("RGB")
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
    return safe_unique_names([Path(p).stem for p in paths])
