"""Write the README's shipped-model blocks from the shipped model card, or check that they match it.

Usage: python scripts/readme_shipped.py [--check] [--readme README.md] [--card src/kndnet/assets/model_card.json]

Why: the README quotes the shipped student's figures (its export's own output, its test scores, sizes and
memory) and they must change together with the shipped files. Each figure lives in one marked block,
    <!-- shipped:NAME (written by scripts/readme_shipped.py from the shipped model card) -->
    ...
    <!-- /shipped:NAME -->
rendered from src/kndnet/assets/model_card.json, which `kndnet export` wrote for the shipped files, so every
number in them traces to that export. `scripts/ship_model.py` rewrites the blocks when it ships a model;
`--check` (and tests/test_readme_shipped.py) fails when a block is stale or hand-edited. Prose elsewhere refers
to these blocks instead of repeating their numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from kndnet.deploy.model_card import export_summary, kilobytes
from kndnet.errors import KNDNetError
from kndnet.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CARD = ROOT / "src" / "kndnet" / "assets" / "model_card.json"
START = "<!-- shipped:{name} (written by scripts/readme_shipped.py from the shipped model card) -->"
END = "<!-- /shipped:{name} -->"


def export_block(card: dict[str, Any]) -> list[str]:
    """The command that exported the shipped files and what it printed (the card keeps both)."""
    if "export_command" not in card:
        raise KNDNetError("the shipped model card has no export_command: export the student with `kndnet export` "
                          "(which records its command line) before shipping it")
    out = _out_folder(shlex.split(card["export_command"]))
    wrote = [f"wrote {out}/MODEL_CARD.md"] if out else []
    return ["```", f"$ {card['export_command']}", *export_summary(card), *wrote, "```"]


def _out_folder(argv: list[str]) -> str | None:
    """--out's value in a recorded command line (`--out DIR` or `--out=DIR`)."""
    for i, token in enumerate(argv):
        if token == "--out" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith("--out="):
            return token.removeprefix("--out=")
    return None


def _balanced_accuracy(sensitivity: dict[str, float | None]) -> str:
    """Balanced accuracy is the mean per-class sensitivity (recall): the card keeps each class's."""
    values = [v for v in sensitivity.values() if v is not None]
    return f"{sum(values) / len(values):.3f}" if len(values) == len(sensitivity) else "-"


def figures_block(card: dict[str, Any]) -> list[str]:
    """The shipped student's scores per runtime on the card's held-out split, with sizes and memory."""
    split, images = card.get("int8_eval_split", "test"), sum(card["eval_images_per_class"].values())
    rows = [("fp32 ONNX", "fp32", "", f"{kilobytes(card['fp32_bytes'])} (checkpoint "
             f"{kilobytes(card['checkpoint_bytes'])})"),
            ("int8 ONNX (QDQ, per-channel)", "int8", f"{card['int8_vs_fp32_top1_agreement']:.3f}",
             kilobytes(card["int8_bytes"]))]
    lines = [f"| shipped student, {split} split ({images} images) | accuracy | balanced accuracy | macro-F1 | "
             "melanoma sensitivity | top-1 agreement with fp32 | file |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, prefix, agreement, size in rows:
        sensitivity = card[f"{prefix}_sensitivity"]
        lines.append(f"| {name} | {card[f'{prefix}_accuracy']:.3f} | {_balanced_accuracy(sensitivity)} | "
                     f"{card[f'{prefix}_macro_f1']:.3f} | {_cell(sensitivity.get('mel'))} | {agreement or '-'} | "
                     f"{size} |")
    if "tflite_int8_bytes" in card:
        lines.append(f"| int8 LiteRT (full-integer) | {card['tflite_int8_accuracy']:.3f} | - | "
                     f"{card['tflite_int8_macro_f1']:.3f} | - | {card['tflite_int8_vs_torch_fp32_top1_agreement']:.3f} "
                     f"| {kilobytes(card['tflite_int8_bytes'])} |")
    lines += ["", f"{card['parameters']:,} parameters, {card['macs'] / 1e6:.1f} M multiply-accumulates at "
              f"{card['image_size']} px, int8 peak activations {kilobytes(card['peak_activation_bytes_int8'])} (graph "
              f"liveness){_micro(card)}; probabilities temperature-scaled with T = "
              f"{card['calibration_temperature']:.4f}; colour constancy: {card.get('color_constancy', 'none')}."]
    return lines


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _micro(card: dict[str, Any]) -> str:
    if "tflm_arena_bytes" not in card:
        return ""
    return (f", TensorFlow Lite Micro arena {kilobytes(card['tflm_arena_bytes'])} measured and flash "
            f"{kilobytes(card['tflite_int8_bytes'])}")


BLOCKS: dict[str, Callable[[dict[str, Any]], list[str]]] = {"export": export_block, "figures": figures_block}


def _span(text: str, name: str) -> tuple[int, int]:
    """Where block `name`'s generated lines sit in `text`: after its start marker's line, up to its end marker's
    line, each marker alone on its line. Refuses a missing, repeated, reversed or inline marker by name."""
    start, end = START.format(name=name), END.format(name=name)
    found = list(re.finditer(rf"^{re.escape(start)}\n(.*?)^{re.escape(end)}$", text, re.MULTILINE | re.DOTALL))
    if len(found) != 1 or text.count(start) != 1 or text.count(end) != 1:
        raise KNDNetError(f"README block {name!r}: expected one '{start}' line and, after it, one '{end}' line")
    return found[0].span(1)


def render(text: str, card: dict[str, Any]) -> str:
    """`text` with every shipped-model block rewritten from `card`."""
    for name, block in BLOCKS.items():
        begin, end = _span(text, name)
        text = text[:begin] + "\n".join(block(card)) + "\n" + text[end:]
    return text


def stale_blocks(text: str, card: dict[str, Any]) -> list[str]:
    """Names of the blocks whose lines differ from what `card` renders."""
    fresh = render(text, card)
    return [name for name in BLOCKS if text[slice(*_span(text, name))] != fresh[slice(*_span(fresh, name))]]


def update_readme(readme: Path = README, card_path: Path = CARD) -> list[str]:
    """Rewrite `readme`'s blocks from the card at `card_path` (atomically); return the names that changed."""
    text, card = readme.read_text(), json.loads(card_path.read_text())
    changed = stale_blocks(text, card)
    if changed:
        atomic_write_text(readme, render(text, card))
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale blocks (exit 1 if any)")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--card", type=Path, default=CARD)
    args = parser.parse_args()
    if args.check:
        stale = stale_blocks(args.readme.read_text(), json.loads(args.card.read_text()))
        if stale:
            print(f"{args.readme}: shipped-model block(s) {', '.join(stale)} differ from {args.card}; run "
                  "python scripts/readme_shipped.py", file=sys.stderr)
        return 1 if stale else 0
    changed = update_readme(args.readme, args.card)
    print(f"rewrote {', '.join(changed)} in {args.readme}" if changed else f"{args.readme} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
