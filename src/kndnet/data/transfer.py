"""Unlabelled transfer images for distillation: pictures that only the teacher scores.

Why: distillation needs inputs, not labels. Function matching (Beyer et al., CVPR 2022) teaches the student
to match the teacher wherever the teacher is defined, and their students improved with more images to match
on, unlabelled or even from another domain. A dermatology group usually holds many more dermoscopic images
than it has verified diagnoses for; `distill.transfer_images` lets those images teach the student too.

The images must not include the manifest's validation or test images: those select and score the model, and a
student trained to match the teacher on them would be scored on pictures it was taught on.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kndnet.data.formats import IMAGE_SUFFIXES, image_files_under
from kndnet.data.selection import split_rows
from kndnet.errors import DataError

__all__ = ["transfer_rows"]


def transfer_rows(folder: str | Path, manifest: pd.DataFrame, val_fold: int) -> pd.DataFrame:
    """The image files under `folder` as rows (image_id = file stem, path), checked against the manifest.

    Raises DataError when the folder is missing or holds no image, or when any of its images is a validation
    or test image of the manifest (same file, or same image id), naming them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"distill.transfer_images: {folder} is not a folder; give a folder of unlabelled images")
    files = image_files_under(folder)
    if not files:
        raise DataError(f"distill.transfer_images: {folder} holds no image files (looked for "
                        f"{', '.join(sorted(IMAGE_SUFFIXES))}, in sub-folders too)")
    rows = pd.DataFrame({"image_id": [p.stem for p in files], "path": [str(p.absolute()) for p in files]})
    _refuse_held_out(rows, manifest, val_fold, folder)
    return rows


def _refuse_held_out(rows: pd.DataFrame, manifest: pd.DataFrame, val_fold: int, folder: Path) -> None:
    """Refuse transfer images that are the manifest's validation or test images (by file or by image id)."""
    held_out = pd.concat([split_rows(manifest, "val", val_fold).assign(held="validation"),
                          split_rows(manifest, "test", val_fold).assign(held="test")])
    by_id = dict(zip(held_out["image_id"].astype(str), held_out["held"]))
    by_file = {_resolved(p): held for p, held in zip(held_out["path"], held_out["held"])}
    leaks = [(path, by_file.get(resolved) or by_id[image_id])
             for image_id, path, resolved in zip(rows["image_id"], rows["path"], map(_resolved, rows["path"]))
             if image_id in by_id or resolved in by_file]
    if leaks:
        shown = ", ".join(f"{Path(path).name} ({held})" for path, held in leaks[:5])
        more = f" and {len(leaks) - 5} more" if len(leaks) > 5 else ""
        raise DataError(f"distill.transfer_images: {len(leaks)} image(s) in {folder} are validation or test "
                        f"images of the manifest: {shown}{more}. Those images select and score the model; "
                        "remove them from the folder")


def _resolved(path: str) -> str:
    """One spelling per file (symlinks and relative paths resolved), so a linked copy is still caught."""
    return str(Path(path).resolve())
