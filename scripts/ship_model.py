"""Copy an exported student (a `kndnet export --int8` folder) into the package (src/kndnet/assets/).

Usage: python scripts/ship_model.py EXPORT_DIR
Pick the student by its validation score, never by the test split.
Ships the slim checkpoint (weights + spec), the int8 ONNX model and the model card; together they must
stay under 1 MB. Then rewrites the README's shipped-model blocks from the new card (scripts/readme_shipped.py),
so the figures the README quotes are the shipped files' own; prose about the run still needs a person.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from readme_shipped import update_readme

ASSETS = Path(__file__).resolve().parents[1] / "src" / "kndnet" / "assets"
FILES = {"model.ckpt": "kndnet_student.ckpt", "model_int8.onnx": "kndnet_student_int8.onnx",
         "MODEL_CARD.md": "MODEL_CARD.md", "model_card.json": "model_card.json"}


def main() -> None:
    export = Path(sys.argv[1])
    ASSETS.mkdir(parents=True, exist_ok=True)
    for source, target in FILES.items():
        shutil.copy(export / source, ASSETS / target)
    total = sum((ASSETS / t).stat().st_size for t in FILES.values())
    if total >= 1024 * 1024:
        raise SystemExit(f"shipped files are {total / 1024:.0f} KB: over the 1 MB budget")
    print(f"shipped {', '.join(FILES.values())} ({total / 1024:.0f} KB) to {ASSETS}")
    changed = update_readme()
    print(f"README.md: rewrote the shipped-model block(s) {', '.join(changed) or '(none changed)'}")


if __name__ == "__main__":
    main()
