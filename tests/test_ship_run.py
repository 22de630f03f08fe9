"""scripts/ship_run.py and ship_model.py: the shipping rules refuse by name, and a refused ship changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kndnet.errors import ConfigError, KNDNetError
from kndnet.shipped import ASSETS
from tests.helpers import load_script

PASSING = {"tflite_int8_vs_torch_fp32_top1_agreement": 0.987, "torch_fp32_macro_f1": 0.560,
           "tflite_int8_macro_f1": 0.555, "int8_vs_fp32_top1_agreement": 0.986, "fp32_macro_f1": 0.560,
           "int8_macro_f1": 0.561}


@pytest.fixture(scope="module")
def ship_run():
    return load_script("ship_run")


def test_validation_must_prefer_the_candidate(ship_run):
    assert ship_run.validation_refusal(0.554, 0.548) is None
    for candidate in (0.548, 0.500):
        refusal = ship_run.validation_refusal(candidate, 0.548)
        assert "validation prefers the shipped student: macro-F1 0.5480" in refusal


@pytest.mark.parametrize(("key", "value", "runtime"), [
    ("tflite_int8_vs_torch_fp32_top1_agreement", 0.969, "LiteRT: top-1 agreement 0.969"),
    ("tflite_int8_macro_f1", 0.541, "LiteRT: top-1 agreement 0.987 (bar 0.97), macro-F1 0.541 against fp32 0.560"),
    ("tflite_int8_macro_f1", 0.575, "LiteRT: "),  # a gap either way: the test's bar is |difference|
    ("int8_macro_f1", 0.525, "ONNX int8: "),
    ("int8_vs_fp32_top1_agreement", 0.949, "ONNX int8: top-1 agreement 0.949 (bar 0.95)"),
    ("int8_vs_fp32_top1_agreement", None, "ONNX int8: not in the export's card")])
def test_each_parity_bar_fails_alone_and_by_name(ship_run, key, value, runtime):
    assert ship_run.parity_failures(PASSING) == []
    card = {k: v for k, v in {**PASSING, key: value}.items() if v is not None}
    failures = ship_run.parity_failures(card)
    assert len(failures) == 1 and failures[0].startswith(runtime)


def test_a_gap_of_exactly_the_bar_passes_despite_float_rounding(ship_run):
    card = {**PASSING, "torch_fp32_macro_f1": 0.5678, "tflite_int8_macro_f1": 0.5578}
    assert 0.5678 - 0.5578 > 0.01 and ship_run.parity_failures(card) == []
    assert ship_run.parity_failures({**card, "tflite_int8_macro_f1": 0.5577})


def _finished_run(tmp_path: Path) -> Path:
    run = tmp_path / "v99"
    (run / "distill" / "checkpoints").mkdir(parents=True)
    (run / "manifest.csv").write_text("image_id\n")
    (run / "distill" / "checkpoints" / "best.ckpt").write_bytes(b"")
    return run


def _record_commands(monkeypatch, ship_run, validation: dict[str, float], card: dict,
                     val_cards: dict[bool, dict] | None = None) -> list[str]:
    """Record each kndnet command (its name, `val` for a validation export, its fold flag); an export writes
    `card`, or with `--eval-split val` the card `val_cards` holds for its fold."""
    calls: list[str] = []
    monkeypatch.setattr(ship_run, "check_litert_installed", lambda: None)  # the default suite has no LiteRT extra
    monkeypatch.setattr(ship_run, "validation_macro_f1", lambda model, manifest, out: validation[model])

    def fake_kndnet(*argv: str) -> None:
        on_val = "--eval-split" in argv
        calls.append(" ".join([argv[0], *(["val"] if on_val else []), *(a for a in argv if a.endswith("fold-input"))]))
        if argv[0] == "export":
            out = Path(argv[argv.index("--out") + 1])
            out.mkdir(parents=True)
            written = val_cards["--no-fold-input" not in argv] if on_val else card
            (out / "model_card.json").write_text(json.dumps(written))
    monkeypatch.setattr(ship_run, "run_kndnet", fake_kndnet)
    monkeypatch.setattr(ship_run, "ship", lambda export: calls.append("ship"))
    return calls


def test_a_candidate_validation_does_not_prefer_is_neither_calibrated_nor_exported(ship_run, monkeypatch, tmp_path):
    run = _finished_run(tmp_path)
    calls = _record_commands(monkeypatch, ship_run, {str(run / "distill/checkpoints/best.ckpt"): 0.54,
                                                     "kndnet-student": 0.548}, PASSING)
    with pytest.raises(KNDNetError, match="rule 1: validation prefers the shipped student"):
        ship_run.ship_run(run, "data", tmp_path / "export")
    assert calls == []


def test_without_the_litert_extra_it_stops_before_any_command(ship_run, monkeypatch, tmp_path):
    """Rule 3 exports to LiteRT: a missing extra is named at once, not after two validation runs."""
    run = _finished_run(tmp_path)
    calls = _record_commands(monkeypatch, ship_run, {str(run / "distill/checkpoints/best.ckpt"): 0.554,
                                                     "kndnet-student": 0.548}, PASSING)
    monkeypatch.setattr(ship_run, "validation_macro_f1", lambda *args: calls.append("evaluate"))

    def missing() -> None:
        raise ConfigError("LiteRT support needs the optional packages; install them with `pip install "
                          "'kndnet[litert]'`")
    monkeypatch.setattr(ship_run, "check_litert_installed", missing)
    with pytest.raises(ConfigError, match=r"kndnet\[litert\]"):
        ship_run.ship_run(run, "data", tmp_path / "export")
    assert calls == []


def test_an_export_that_misses_a_bar_is_not_shipped(ship_run, monkeypatch, tmp_path):
    run = _finished_run(tmp_path)
    validation = {str(run / "distill/checkpoints/best.ckpt"): 0.554, "kndnet-student": 0.548}
    calls = _record_commands(monkeypatch, ship_run, validation, {**PASSING, "tflite_int8_macro_f1": 0.541})
    with pytest.raises(KNDNetError, match="rule 3: LiteRT"):
        ship_run.ship_run(run, "data", tmp_path / "export")
    assert calls == ["calibrate", "export"]  # folded: export's default
    calls = _record_commands(monkeypatch, ship_run, validation, PASSING)
    ship_run.ship_run(run, "data", tmp_path / "export2", fold_input=False)
    assert calls == ["calibrate", "export --no-fold-input", "ship"]


def test_ship_refuses_a_card_the_readme_cannot_quote_before_changing_anything_and_ships_a_good_one(tmp_path,
                                                                                                    monkeypatch):
    ship_model = load_script("ship_model")
    export = tmp_path / "export"
    export.mkdir()
    for source, target in ship_model.FILES.items():
        shutil.copy(ASSETS / target, export / source)
    card = json.loads((export / "model_card.json").read_text())
    (export / "model_card.json").write_text(json.dumps({k: v for k, v in card.items() if k != "export_command"}))
    assets, readme, original = tmp_path / "assets", tmp_path / "README.md", ship_model.README.read_text()
    start = load_script("readme_shipped").START.format(name="figures")
    readme.write_text(original.replace(start, f"{start}\n| 0.5 | 1 KB |"))
    monkeypatch.setattr(ship_model, "ASSETS", assets)
    monkeypatch.setattr(ship_model, "README", readme)
    with pytest.raises(KNDNetError, match="export_command"):
        ship_model.ship(export)
    assert not assets.exists() and "| 0.5 | 1 KB |" in readme.read_text()
    (export / "model_card.json").write_text(json.dumps(card))
    ship_model.ship(export)
    assert sorted(p.name for p in assets.iterdir()) == sorted(ship_model.FILES.values())
    assert all((assets / target).read_bytes() == (export / source).read_bytes()
               for source, target in ship_model.FILES.items())
    assert readme.read_text() == original  # the stale line is gone, the block rendered from the card again


@pytest.mark.litert
@pytest.mark.timeout(1800)
def test_a_demo_run_ships_end_to_end_into_a_scratch_package(ship_run, tmp_path, monkeypatch):
    """The real commands, on the demo's run: validation, calibration, LiteRT and ONNX int8 export, the bars, then
    the files and README blocks written into scratch copies (the package's own are left alone)."""
    from kndnet.cli import main
    run = tmp_path / "run"
    assert main(["demo", "--out", str(run)]) == 0
    ship_model, readme_shipped = load_script("ship_model"), load_script("readme_shipped")
    readme = tmp_path / "README.md"
    readme.write_text(readme_shipped.README.read_text())
    monkeypatch.setattr(ship_model, "ASSETS", tmp_path / "assets")
    monkeypatch.setattr(ship_model, "README", readme)
    card = ship_run.ship_run(run, str(run / "manifest.csv"), tmp_path / "export")
    assert (run / "distill_calibrated.ckpt").is_file() and card["tflite_int8_float_ops"] == 0
    assert card["export_command"].startswith("kndnet export --model ") and "--tflite" in card["export_command"]
    assert json.loads((tmp_path / "assets" / "model_card.json").read_text()) == card
    assert readme_shipped.stale_blocks(readme.read_text(), card) == []
    assert readme_shipped.stale_blocks(readme_shipped.README.read_text(), card) == ["export", "figures"]


def _litert_on_val(agreement: float, macro_f1: float) -> dict[str, float]:
    return {"tflite_int8_vs_torch_fp32_top1_agreement": agreement, "torch_fp32_macro_f1": 0.571,
            "tflite_int8_macro_f1": macro_f1}


@pytest.mark.parametrize(("folded", "not_folded", "chosen"), [
    ((0.979, 0.545), (0.982, 0.561), False),  # runs/v43's validation figures
    ((0.993, 0.552), (0.985, 0.550), True),
    ((0.980, 0.561), (0.980, 0.545), True),   # a tie in agreement: the smaller macro-F1 gap
    ((0.980, 0.545), (0.980, 0.561), False),
    ((0.980, 0.561), (0.980, 0.561), True)])  # a full tie: export's default
def test_the_fold_can_be_chosen_on_validation_before_rule_3(ship_run, monkeypatch, tmp_path, capsys, folded,
                                                            not_folded, chosen):
    run = _finished_run(tmp_path)
    validation = {str(run / "distill/checkpoints/best.ckpt"): 0.571, "kndnet-student": 0.554}
    val_cards = {True: _litert_on_val(*folded), False: _litert_on_val(*not_folded)}
    calls = _record_commands(monkeypatch, ship_run, validation, PASSING, val_cards)
    ship_run.ship_run(run, "data", tmp_path / "export", check_only=True, fold_input=None)
    assert calls == ["calibrate", "export val", "export val --no-fold-input",
                     "export" if chosen else "export --no-fold-input"]
    assert f"input fold {'on' if chosen else 'off'}, chosen on validation" in capsys.readouterr().out


@pytest.mark.parametrize(("flags", "folded"), [([], True), (["--fold-input"], True), (["--no-fold-input"], False),
                                               (["--choose-fold-on-val"], None)])
def test_the_command_line_folds_by_default_and_takes_both_spellings(ship_run, monkeypatch, flags, folded):
    """`--fold-input` (the default, as in commands quoted by RESULTS.md), `--no-fold-input` and
    `--choose-fold-on-val` (None: `ship_run` decides on validation) all parse."""
    seen = []
    monkeypatch.setattr(ship_run, "ship_run", lambda run, calib, out, check_only, fold: seen.append(fold))
    monkeypatch.setattr("sys.argv", ["ship_run.py", "runs/v34", "--calib", "data", *flags])
    assert ship_run.main() == 0 and seen == [folded]


def test_a_fold_flag_and_the_choice_on_validation_exclude_each_other(ship_run, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["ship_run.py", "runs/v43", "--calib", "data", "--no-fold-input",
                                     "--choose-fold-on-val"])
    with pytest.raises(SystemExit):
        ship_run.main()
    assert "not allowed with argument" in capsys.readouterr().err
