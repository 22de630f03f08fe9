"""Copy an exported student (a `kndnet export --int8` folder) into the package (src/kndnet/assets/).

Usage: python scripts/ship_model.py EXPORT_DIR
Pick the student by its validation score, never by the test split.
Ships the slim checkpoint (weights + spec), the int8 ONNX model and the model card; together they must
stay under 1 MB. Then rewrites the README's shipped-model blocks from the new card (scripts/readme_shipped.py),
so the figures the README quotes are the shipped files' own; prose about the run still needs a person.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

from readme_shipped import README, render

from kndnet.errors import KNDNetError
from kndnet.io import atomic_write_text

ASSETS = Path(__file__).resolve().parents[1] / "src" / "kndnet" / "assets"
FILES = {"model.ckpt": "kndnet_student.ckpt", "model_int8.onnx": "kndnet_student_int8.onnx",
         "MODEL_CARD.md": "MODEL_CARD.md", "model_card.json": "model_card.json"}


def ship(export: Path) -> None:
    """Copy `export`'s files into the package and rewrite the README's shipped-model blocks from its card.

    Every check (files present, size budget, a card the README can quote) passes before anything changes; the
    files are then staged beside their targets and each renamed into place, the README last."""
    missing = [source for source in FILES if not (export / source).is_file()]
    if missing:
        raise KNDNetError(f"{export} lacks {', '.join(missing)}: ship a `kndnet export --int8` folder")
    total = sum((export / source).stat().st_size for source in FILES)
    if total >= 1024 * 1024:
        raise KNDNetError(f"{export}'s files are {total / 1024:.0f} KB: over the shipped 1 MB budget")
    readme = render(README.read_text(), json.loads((export / "model_card.json").read_text()))
    ASSETS.mkdir(parents=True, exist_ok=True)
    for source, target in FILES.items():
        shutil.copy(export / source, ASSETS / f".{target}.staged")
    for target in FILES.values():
        os.replace(ASSETS / f".{target}.staged", ASSETS / target)
    atomic_write_text(README, readme)
    print(f"shipped {', '.join(FILES.values())} ({total / 1024:.0f} KB) to {ASSETS}; README.md's shipped-model "
          "blocks rewritten from its card")
    print("still by hand: README's `kndnet predict` examples (their outputs: tests/test_readme_examples.py shows "
          "each stale one), the note under the export lines (its time and history), the validation macro-F1 quoted "
          "in *Shipped model* and the 64 px paragraph, the runtime table under *LiteRT and microcontrollers* "
          "(benchmarks/bench_runtimes.py on the new export), *Shipped model* and *Results* prose, docs/RESULTS.md "
          "(scripts/make_results.py with the new --shipped-export)")


def exit_code(step: Callable[[], object]) -> int:
    """Run `step`; a refusal (KNDNetError) prints as one line and exits 2, as the kndnet CLI's do."""
    try:
        step()
    except KNDNetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main() -> int:
    return exit_code(lambda: ship(Path(sys.argv[1])))


if __name__ == "__main__":
    sys.exit(main())
