"""Every image mode a user may hand us becomes 8-bit RGB; bad files get a named error."""

import numpy as np
import pytest
from PIL import Image

from kndnet.data import images
from kndnet.data.images import load_rgb
from kndnet.errors import ImageError


def _save(tmp_path, img, name, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA"])
def test_modes_become_rgb(tmp_path, mode):
    img = Image.new("RGB", (20, 10), (200, 40, 10)).convert(mode)
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    out = load_rgb(_save(tmp_path, img, f"x.{fmt.lower()}", format=fmt))
    assert out.mode == "RGB" and out.size == (20, 10)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.full((8, 8), 65535 // 2, dtype=np.uint16)
    out = np.asarray(load_rgb(_save(tmp_path, Image.fromarray(arr), "x.png")))
    assert 120 <= out[0, 0, 0] <= 135


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (30, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    out = load_rgb(_save(tmp_path, img, "x.jpg", exif=exif))
    assert out.size == (10, 30)


def test_truncated_file_names_the_file(tmp_path):
    path = _save(tmp_path, Image.new("RGB", (64, 64), (1, 2, 3)), "x.jpg")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ImageError, match="x.jpg"):
        load_rgb(path)


def test_decompression_bomb_limit(tmp_path, monkeypatch):
    path = _save(tmp_path, Image.new("RGB", (100, 100)), "big.png")
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(ImageError, match="decompression-bomb"):
        load_rgb(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_rgb(tmp_path / "nope.jpg")
