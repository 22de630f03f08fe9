"""Decode any image a user may hand us into an RGB picture, safely.

Dermoscopy exports come as JPEG/PNG/TIFF with EXIF rotation, grayscale, alpha, palettes, CMYK or
16-bit samples; all become 8-bit RGB here, once, so every later stage sees one format.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from kndnet.errors import ImageError

# Pillow's own limit is ~89 MP with a warning; we refuse above 64 MP outright (a 600x450 lesion is 0.3 MP).
MAX_IMAGE_PIXELS = 64_000_000


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8), mode="L")
    if img.mode in {"RGBA", "LA", "PA"} or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Open `path`, apply its EXIF orientation and return an 8-bit RGB image.

    Raises ImageError naming the file when it is missing, not an image, truncated or too large.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(path, "file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageError(path, f"{width}x{height} pixels is over the {MAX_IMAGE_PIXELS:,}-pixel "
                                           "limit (decompression-bomb guard); downscale the image first")
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as err:
        raise ImageError(path, f"cannot decode as an image ({err}); re-export it as JPEG or PNG") from err


def load_rgb_array(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode to an HxWx3 uint8 array, resized to `size`x`size` (bilinear, antialiased) if given."""
    img = load_rgb(path)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(img, dtype=np.uint8)  # writable: torch.from_numpy needs it
