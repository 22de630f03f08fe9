"""`kndnet synth`: a small HAM10000-layout data set of class-dependent synthetic lesions.

Each class has its own lesion colour, shape and texture, so a tiny CNN learns it well above chance;
each lesion is photographed 1-3 times (shifted, rotated, rescaled), so lesion-grouped splitting
matters exactly as in the real release. Used by the unit tests and `kndnet demo`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from kndnet.classes import CLASS_CODES
from kndnet.io import atomic_path

# (RGB of the lesion, ellipse aspect ratio, number of dots) per class, in class-index order
_LOOK = {
    "akiec": ((200, 110, 90), 1.0, 0), "bcc": ((225, 170, 190), 1.6, 3),
    "bkl": ((140, 100, 60), 1.2, 8), "df": ((160, 120, 110), 1.0, 1),
    "mel": ((40, 25, 30), 1.4, 5), "nv": ((110, 70, 45), 1.0, 0),
    "vasc": ((170, 30, 50), 1.3, 2),
}


def _draw_lesion(code: str, rng: np.random.Generator, size: int) -> Image.Image:
    skin = np.array([225, 180, 150]) + rng.integers(-20, 20, 3)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in skin))
    draw = ImageDraw.Draw(img)
    colour, aspect, dots = _LOOK[code]
    radius = size * rng.uniform(0.2, 0.3)
    cx, cy = size / 2 + rng.normal(0, size * 0.05, 2)
    shade = tuple(int(np.clip(c + rng.integers(-15, 15), 0, 255)) for c in colour)
    draw.ellipse([cx - radius * aspect, cy - radius, cx + radius * aspect, cy + radius], fill=shade)
    for _ in range(dots):
        dx, dy = rng.uniform(-0.6, 0.6, 2) * radius
        r = radius * 0.12
        draw.ellipse([cx + dx - r, cy + dy - r, cx + dx + r, cy + dy + r], fill=(250, 250, 240))
    return img


def _photograph(lesion: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Another picture of the same lesion: rotated, shifted, slightly blurred, noisy."""
    shot = lesion.rotate(float(rng.uniform(0, 360)), resample=Image.Resampling.BILINEAR,
                         fillcolor=lesion.getpixel((0, 0)))
    shift = tuple(int(v) for v in rng.integers(-3, 4, 2))
    shot = shot.transform(shot.size, Image.Transform.AFFINE, (1, 0, shift[0], 0, 1, shift[1]),
                          fillcolor=lesion.getpixel((0, 0)))
    shot = shot.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 0.8))))
    noisy = np.asarray(shot, dtype=np.int16) + rng.integers(-8, 9, (*shot.size[::-1], 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_synthetic(out_dir: str | Path, lesions_per_class: int = 12, image_size: int = 64,
                    max_images_per_lesion: int = 3, seed: int = 0) -> pd.DataFrame:
    """Write HAM10000_metadata.csv and images under out_dir; return the metadata table."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    rows = []
    for code in CLASS_CODES:
        for _ in range(lesions_per_class):
            lesion_id = f"HAM_{len(rows):07d}"
            lesion = _draw_lesion(code, rng, image_size)
            for _ in range(int(rng.integers(1, max_images_per_lesion + 1))):
                image_id = f"ISIC_{9_000_000 + len(rows):07d}"
                part = "HAM10000_images_part_1" if len(rows) % 2 == 0 else "HAM10000_images_part_2"
                (out / part).mkdir(parents=True, exist_ok=True)
                with atomic_path(out / part / f"{image_id}.jpg") as tmp:
                    _photograph(lesion, rng).save(tmp, format="JPEG", quality=92)
                rows.append({"lesion_id": lesion_id, "image_id": image_id, "dx": code,
                             "dx_type": "synthetic", "age": float(rng.integers(20, 80)),
                             "sex": "unknown", "localization": "synthetic"})
    table = pd.DataFrame(rows)
    with atomic_path(out / "HAM10000_metadata.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table
