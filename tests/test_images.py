from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from idinvert.errors import ImageError
from idinvert.images import (expand_inputs, open_image, read_image, save_image, tensor_to_uint8,
                             unique_names)


def test_modes_become_rgb(tmp_path):
    Image.new("RGBA", (16, 16), (255, 0, 0, 0)).save(tmp_path / "a.png")
    assert open_image(tmp_path / "a.png").getpixel((0, 0)) == (255, 255, 255)  # transparent → white
    Image.new("L", (16, 16), 100).save(tmp_path / "l.png")
    assert open_image(tmp_path / "l.png").getpixel((0, 0)) == (100, 100, 100)
    Image.fromarray(np.full((16, 16), 65535 // 2, dtype=np.uint16)).save(tmp_path / "d16.png")
    assert open_image(tmp_path / "d16.png").getpixel((0, 0)) == (127, 127, 127)  # 32767/65535·255 = 127.5−
    Image.new("P", (16, 16), 3).save(tmp_path / "p.png")
    assert open_image(tmp_path / "p.png").mode == "RGB"


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # red on the left half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    shown = open_image(tmp_path / "rot.jpg")
    assert shown.size == (20, 40)
    r, g, b = shown.getpixel((10, 4))  # red ends up on top
    assert r > 200 and g < 50


def test_non_square_is_centre_cropped(tmp_path):
    img = Image.new("RGB", (48, 16), (0, 0, 255))
    img.paste((0, 255, 0), (16, 0, 32, 16))  # the centre square is green
    img.save(tmp_path / "wide.png")
    x = read_image(tmp_path / "wide.png", 8)
    assert x.shape == (3, 8, 8)
    assert torch.allclose(x[:, 4, 4], torch.tensor([-1.0, 1.0, -1.0]), atol=0.02)


def test_bad_files(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageError, match="not an image file"):
        open_image(tmp_path / "notes.png")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="cut.jpg"):
        open_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "absent.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="holds no images"):
        expand_inputs([tmp_path / "empty"])


def test_roundtrip_and_official_postprocess(tmp_path):
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 1.5]).view(1, 1, 6).expand(3, 1, 6).contiguous()
    assert tensor_to_uint8(x)[0, :, 0].tolist() == [0, 0, 128, 191, 255, 255]
    img = torch.rand(3, 16, 16) * 2 - 1
    save_image(img, tmp_path / "a.png")
    back = read_image(tmp_path / "a.png", 16)
    assert (back - img).abs().max() <= 1 / 127.5 + 1e-6
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left behind


def test_inputs_and_names(tmp_path):
    for name in ("b.png", "a.jpg", "skip.txt"):
        (tmp_path / name).write_bytes(b"")
    sub = tmp_path / "list.txt"
    sub.write_text("a.jpg\n# comment\n\nb.png\n")
    assert [p.name for p in expand_inputs([tmp_path])] == ["a.jpg", "b.png"]
    assert [p.name for p in expand_inputs([sub])] == ["a.jpg", "b.png"]
    from pathlib import Path

    assert unique_names([Path("x/a.png"), Path("y/a.jpg"), Path("b.png")]) == ["a", "a_2", "b"]
