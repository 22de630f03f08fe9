"""The HAM10000 / ISIC 2018 Task 3 class table: one place for codes, indices and names.

Indices are alphabetical by code, as in the KNDNet notebooks (Lishad et al., 2025) and torchvision's
ImageFolder, so index 4 is always melanoma. Counts are the full HAM10000 release (Tschandl et al., 2018).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LesionClass:
    code: str          # HAM10000 `dx` value
    index: int         # model output index
    name: str          # full diagnostic name
    isic_column: str   # column in the ISIC 2018 Task 3 ground-truth CSV
    full_count: int    # images in the full 10,015-image release


CLASSES: tuple[LesionClass, ...] = (
    LesionClass("akiec", 0, "Actinic keratoses and intraepithelial carcinoma", "AKIEC", 327),
    LesionClass("bcc", 1, "Basal cell carcinoma", "BCC", 514),
    LesionClass("bkl", 2, "Benign keratosis-like lesions", "BKL", 1099),
    LesionClass("df", 3, "Dermatofibroma", "DF", 115),
    LesionClass("mel", 4, "Melanoma", "MEL", 1113),
    LesionClass("nv", 5, "Melanocytic nevi", "NV", 6705),
    LesionClass("vasc", 6, "Vascular lesions", "VASC", 142),
)

CLASS_CODES: tuple[str, ...] = tuple(c.code for c in CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
ISIC_COLUMNS: tuple[str, ...] = tuple(c.isic_column for c in CLASSES)
NUM_CLASSES = len(CLASSES)
MELANOMA_INDEX = CLASS_CODES.index("mel")

_LOOKUP: dict[str, str] = {}
for _c in CLASSES:
    for _alias in (_c.code, _c.name, _c.isic_column):
        _LOOKUP[_alias.strip().lower()] = _c.code


def normalise_label(value: object) -> str | None:
    """Map a code, full name or ISIC column name (any case) to the class code; None if unknown."""
    return _LOOKUP.get(str(value).strip().lower())

