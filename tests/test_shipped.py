"""The student shipped inside the package: small, self-describing, used when no --model is given."""

from __future__ import annotations

import json

import torch

from kndnet.checkpoint import load_model
from kndnet.cli import main
from kndnet.shipped import ASSETS, SHIPPED_CHECKPOINT, SHIPPED_INT8


def test_shipped_files_are_under_one_megabyte_together():
    total = SHIPPED_CHECKPOINT.stat().st_size + SHIPPED_INT8.stat().st_size
    assert total < 1024 * 1024


def test_shipped_checkpoint_rebuilds_the_148855_parameter_student_with_weights_only():
    raw = torch.load(SHIPPED_CHECKPOINT, weights_only=True, map_location="cpu")
    assert "optimizer_states" not in raw
    model, spec = load_model(SHIPPED_CHECKPOINT)
    assert sum(p.numel() for p in model.parameters()) == 148_855
    assert model(torch.zeros(1, 3, spec.image_size, spec.image_size)).shape == (1, 7)


def test_model_card_attributes_the_data_and_disclaims_medical_use():
    card = json.loads((ASSETS / "model_card.json").read_text())
    assert "Tschandl" in card["data_attribution"]
    assert any("Not a medical device" in line for line in card["limitations"])
    assert "Not a medical device" in (ASSETS / "MODEL_CARD.md").read_text()


def test_predict_uses_the_shipped_student_by_default(synth_dir, capsys):
    image = next(synth_dir.rglob("*.jpg"))
    assert main(["predict", str(image), "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["error"] is None and len(result["top"]) == 3


def test_evaluate_accepts_the_shipped_models_by_name(synth_manifest, tmp_path):
    for name in ("kndnet-student", "kndnet-student-int8"):
        out = tmp_path / name
        assert main(["evaluate", "--model", name, "--data", str(synth_manifest), "--out", str(out),
                     "--resamples", "20"]) == 0
        assert json.loads((out / "metrics.json").read_text())["images"] > 0
