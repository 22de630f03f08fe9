"""Logit-averaging ensembles in `evaluate` (e.g. Lite0 + Lite2 teachers): the mean logit, refused when the
members would need different pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kndnet.checkpoint import ModelSpec, save_model_checkpoint
from kndnet.cli import main
from kndnet.errors import CheckpointError
from kndnet.inference import EnsemblePredictor, TorchPredictor, open_predictors
from kndnet.models import create_model
from tests.helpers import tiny_config


def _untrained(tmp_path, name: str, seed: int, temperature: float = 1.0, **overrides) -> str:
    torch.manual_seed(seed)
    cfg = tiny_config("student", tmp_path / "unused", **overrides)
    spec = ModelSpec.from_config(cfg)
    spec.calibration_temperature = temperature
    return str(save_model_checkpoint(create_model(cfg.model, pretrained=False), spec, cfg, tmp_path / name))


def test_the_ensemble_scores_the_mean_of_each_members_calibrated_logits(tmp_path):
    a, b = _untrained(tmp_path, "a.ckpt", 0), _untrained(tmp_path, "b.ckpt", 1, temperature=2.0)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    ensemble = open_predictors([a, b])
    expected = (TorchPredictor(a).logits(images) + TorchPredictor(b).logits(images)) / 2
    assert isinstance(ensemble, EnsemblePredictor) and ensemble.spec.calibration_temperature == 1.0
    assert np.allclose(ensemble.logits(images), expected, atol=1e-6)
    assert not np.allclose(expected, TorchPredictor(a).logits(images), atol=1e-3)
    assert isinstance(open_predictors([a]), TorchPredictor)


def test_members_that_need_different_pixels_are_refused_by_name(tmp_path):
    a, wide = _untrained(tmp_path, "a.ckpt", 0), _untrained(tmp_path, "wide.ckpt", 1, **{"data.image_size": 48})
    with pytest.raises(CheckpointError, match="wide.ckpt preprocesses as .48"):
        open_predictors([a, wide])


def test_evaluate_takes_several_models(tmp_path, synth_manifest):
    a, b = _untrained(tmp_path, "a.ckpt", 0), _untrained(tmp_path, "b.ckpt", 1)
    assert main(["evaluate", "--model", a, b, "--data", str(synth_manifest), "--out", str(tmp_path / "ev"),
                 "--resamples", "20"]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["model"] == f"{a} + {b}"
