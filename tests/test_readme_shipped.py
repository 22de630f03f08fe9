"""scripts/readme_shipped.py: the README's shipped-model figures are the shipped model card's, and a stale or
hand-edited block is caught by name."""

from __future__ import annotations

import json

import pytest

from kndnet.errors import KNDNetError
from tests.helpers import load_script


@pytest.fixture(scope="module")
def readme_shipped():
    return load_script("readme_shipped")


@pytest.fixture()
def card(readme_shipped):
    return json.loads(readme_shipped.CARD.read_text())


def test_the_readme_quotes_the_shipped_model_card(readme_shipped, card):
    assert readme_shipped.stale_blocks(readme_shipped.README.read_text(), card) == []


def test_a_figure_changed_in_the_card_makes_its_blocks_stale(readme_shipped, card):
    text = readme_shipped.README.read_text()
    assert readme_shipped.stale_blocks(text, {**card, "int8_macro_f1": card["int8_macro_f1"] - 0.01}) == [
        "export", "figures"]
    assert readme_shipped.stale_blocks(text, {**card, "calibration_temperature": 1.5}) == ["figures"]


def test_a_hand_edited_block_is_stale_and_rewritten(readme_shipped, card, tmp_path):
    readme = tmp_path / "README.md"
    shown = f"{card['tflite_int8_vs_torch_fp32_top1_agreement']:.3f} | {card['tflite_int8_bytes'] / 1024:.1f} KB"
    original = readme_shipped.README.read_text()
    assert shown in original
    readme.write_text(original.replace(shown, "0.999 | 1.0 KB"))
    card_path = tmp_path / "model_card.json"
    card_path.write_text(json.dumps(card))
    assert readme_shipped.update_readme(readme, card_path) == ["figures"]
    assert readme.read_text() == original


def test_the_export_block_is_what_kndnet_export_prints(readme_shipped, card):
    block = readme_shipped.export_block(card)
    assert block[1] == f"$ {card['export_command']}" and block[-2].startswith("wrote ") and len(block) == 8
    assert f"top-1 agreement {card['tflite_int8_vs_torch_fp32_top1_agreement']:.3f}" in block[4]


@pytest.mark.parametrize("damage", ["no end", "two starts", "end first", "one line", "text before the end"])
def test_a_broken_marker_is_refused_by_name(readme_shipped, card, damage):
    start, end = (readme_shipped.START.format(name="figures"), readme_shipped.END.format(name="figures"))
    text = readme_shipped.README.read_text()
    broken = {"no end": text.replace(end, ""), "two starts": text.replace(start, f"{start}\n{start}"),
              "end first": text.replace(start, "@@").replace(end, start).replace("@@", end),
              "one line": text.replace(end, "").replace(start, f"{start}{end}"),
              "text before the end": text.replace(end, f"kept? {end}")}[damage]
    with pytest.raises(KNDNetError, match="'figures'"):
        readme_shipped.render(broken, card)


def test_a_card_without_its_export_command_is_refused(readme_shipped, card):
    with pytest.raises(KNDNetError, match="export_command"):
        readme_shipped.export_block({k: v for k, v in card.items() if k != "export_command"})
