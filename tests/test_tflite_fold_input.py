"""`kndnet export --tflite` (`--fold-input`, its default for the student): the input's 1/std folded into the
student's stem conv.

The fold must change nothing in float (border pixels included, where the stem conv pads), leave no MUL for the
normalisation in the full-integer graph, still track PyTorch, and refuse a model without the student's stem.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kndnet.checkpoint import ModelSpec
from kndnet.config import load_config
from kndnet.deploy.tflite_export import EdgeStudent, foldable_stem, nhwc_pixels
from kndnet.errors import KNDNetError
from kndnet.models import create_model
from tests.helpers import randomise_batchnorm_statistics


def _student(size: int = 48) -> tuple[torch.nn.Module, ModelSpec]:
    cfg = load_config(overrides={"model.color_constancy": "shades_of_gray", "data.image_size": size})
    torch.manual_seed(0)
    model = create_model(cfg.model)
    randomise_batchnorm_statistics(model)
    return model.eval(), ModelSpec.from_config(cfg)


def _pixels(count: int, size: int, seed: int) -> torch.Tensor:
    return (torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8)


def test_folding_the_scale_into_the_stem_changes_nothing_in_float():
    model, spec = _student()
    pixels = nhwc_pixels(_pixels(4, 48, 0))
    pixels[:, 0], pixels[:, :, -1] = 255.0, 0.0  # extreme rows and columns, where the zero padding meets them
    with torch.no_grad():
        multiplied = EdgeStudent(model, spec).eval()(pixels)
        folded_edge = EdgeStudent(model, spec, fold_input=True).eval()
        folded = folded_edge(pixels)
    assert not folded_edge.multiply
    torch.testing.assert_close(folded, multiplied, atol=1e-4, rtol=1e-4)
    assert model.stem[0].weight.abs().min() > 0 and not torch.equal(folded_edge.model.stem[0].weight,
                                                                       model.stem[0].weight)  # a copy was folded


def test_a_model_without_the_student_stem_is_refused_by_name():
    cfg = load_config(role="teacher", overrides={"model.arch": "test_efficientnet", "model.pretrained": "none",
                                                 "data.image_size": 32})
    model, spec = create_model(cfg.model).eval(), ModelSpec.from_config(cfg)
    assert foldable_stem(model) is None  # so `kndnet export --tflite` keeps its MUL by default
    with pytest.raises(KNDNetError, match="--fold-input needs the kndnet student's stem.*--no-fold-input"):
        EdgeStudent(model, spec, fold_input=True)
    student, _ = _student()
    assert foldable_stem(student) is student.stem[0]


def test_fold_input_without_a_litert_export_is_refused(tmp_path, capsys):
    """Asked for by name it is refused without a LiteRT graph; as the default (or --no-fold-input) it is not."""
    from kndnet.cli import main
    from kndnet.shipped import SHIPPED_CHECKPOINT
    code = main(["export", "--model", str(SHIPPED_CHECKPOINT), "--fold-input", "--out", str(tmp_path / "e")])
    assert code == 2 and "--fold-input changes the LiteRT graph only: add --tflite" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
    assert main(["export", "--model", str(SHIPPED_CHECKPOINT), "--no-fold-input", "--out", str(tmp_path / "f")]) == 0


@pytest.mark.litert
def test_the_folded_int8_graph_has_no_normalising_mul_and_tracks_pytorch(tmp_path):
    from kndnet.deploy.tflite_export import convert_tflite, op_census
    from kndnet.inference_tflite import TflitePredictor
    model, spec = _student()
    calib, held_out = _pixels(24, 48, 1), _pixels(16, 48, 2)
    counts = {}
    for fold in (False, True):
        path = convert_tflite(model, spec, tmp_path / f"fold{fold}.tflite", calib, fold_input=fold)
        counts[fold], floats = op_census(path)
        assert floats == []
        with torch.no_grad():
            reference = model(spec.normalise(held_out)).numpy()
        candidate = TflitePredictor(path).logits(held_out)
        assert np.median(np.abs(candidate - reference)) < 0.1 * np.abs(reference).max(), fold
    assert counts[False]["MUL"] - counts[True]["MUL"] == 1  # the normalisation's MUL is gone
    assert counts[True]["ADD"] == counts[False]["ADD"] and counts[True]["CONV_2D"] == counts[False]["CONV_2D"]
