"""LiteRT and TensorFlow Lite Micro: full-integer .tflite export, its predictor, TFLM arena, C array.

Tests marked `litert` need the optional extra (`pip install 'kndnet[litert]'`); the default suite
deselects them and `make test-litert` (CI) installs the extra and runs them, so there they fail, not
skip, when it is missing. The shipped student is exported at 32 px on generated images (no training);
the `litert` tests at the end read the real images in ../shared/data/ham10000.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from kndnet.cli import main
from kndnet.deploy.c_array import write_c_array
from kndnet.deploy.tflite_micro import arena_from_printout
from kndnet.errors import KNDNetError
from kndnet.inference_tflite import dequantise, quantise_input
from kndnet.shipped import ASSETS, SHIPPED_CHECKPOINT

KB = 1024


# --- without the extra (default suite) ---------------------------------------------------------------

def test_tflite_export_without_the_extra_names_it(monkeypatch, synth_manifest, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # import litert_torch raises ImportError
    out = tmp_path / "exp"
    code = main(["export", "--model", "kndnet-student", "--tflite", "--calib", str(synth_manifest), "--out", str(out)])
    assert code == 2 and "pip install 'kndnet[litert]'" in capsys.readouterr().err
    assert not out.exists()


def test_int8_input_quantisation_is_lossless_for_pixels():
    images = torch.arange(256, dtype=torch.uint8).repeat(3, 1).view(1, 3, 16, 16)
    q = quantise_input(images, np.int8, 1.0, -128)  # the exported model's input parameters
    assert q.shape == (1, 16, 16, 3) and q.dtype == np.int8
    assert np.array_equal(q[0, ..., 0].ravel().astype(int) + 128, np.arange(256))
    assert np.allclose(dequantise(np.array([[-128, 0, 127]], np.int8), np.int8, 0.5, -128), [[0, 64, 127.5]])


def test_arena_is_read_from_tflm_printout():
    lines = ["[RecordingMicroAllocator] Arena allocation total 223040 bytes",
             "[RecordingMicroAllocator] Arena allocation head 196608 bytes"]
    assert arena_from_printout(lines) == (223040, 196608)
    with pytest.raises(KNDNetError, match="format changed"):
        arena_from_printout(["something else"])


def test_c_array_holds_the_model_bytes_aligned_with_its_length(tmp_path):
    from kndnet.checkpoint import load_model
    _, spec = load_model(SHIPPED_CHECKPOINT)
    model = bytes(range(40))
    io = {"input_scale": 1.0, "input_zero_point": -128, "output_scale": 0.02, "output_zero_point": 5}
    write_c_array(tmp_path, model, spec, io, ["CONV_2D", "MEAN"], arena_bytes=1000)
    source, header, main_cc = ((tmp_path / n).read_text() for n in ("model_data.cc", "model_data.h", "main.cc"))
    assert "alignas(16) const unsigned char g_kndnet_model_data[]" in source
    assert "g_kndnet_model_data_len = 40;" in source and source.count("0x") == 40
    assert '"mel"' in source and "Melanoma" in source
    assert "kKndnetInputSize = 128" in header and "kKndnetInputZeroPoint = -128" in header
    assert "kKndnetArenaSize = 2024" in header  # measured arena + 1 KB margin
    assert "resolver.AddConv2D();" in main_cc and "MicroMutableOpResolver<2>" in main_cc


# --- with the extra, on generated images -------------------------------------------------------------

@pytest.fixture(scope="module")
def exported_tflite(synth_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite_export")
    assert main(["export", "--model", "kndnet-student", "--image-size", "32", "--tflite", "--c-array",
                 "--calib", str(synth_manifest), "--calib-count", "16", "--out", str(out)]) == 0
    return out


@pytest.mark.litert
def test_no_fold_input_keeps_the_normalising_mul(exported_tflite, synth_manifest, tmp_path):
    """`--no-fold-input` exports the graph with the MUL by 1/std that the default folds into the stem conv."""
    from kndnet.deploy.tflite_export import op_census
    out = tmp_path / "unfolded"
    assert main(["export", "--model", "kndnet-student", "--image-size", "32", "--tflite", "--no-fold-input",
                 "--calib", str(synth_manifest), "--calib-count", "16", "--out", str(out)]) == 0
    assert json.loads((out / "model_card.json").read_text())["tflite_input_folded"] is False
    unfolded, folded = op_census(out / "model_int8.tflite")[0], op_census(exported_tflite / "model_int8.tflite")[0]
    assert unfolded["MUL"] == folded["MUL"] + 1 and unfolded["CONV_2D"] == folded["CONV_2D"]


@pytest.mark.litert
def test_tflite_is_full_integer_with_int8_input(exported_tflite):
    from kndnet.deploy.tflite_export import op_census
    card = json.loads((exported_tflite / "model_card.json").read_text())
    counts, floats = op_census(exported_tflite / "model_int8.tflite")
    assert floats == [] and card["tflite_int8_float_ops"] == 0
    assert "QUANTIZE" not in counts and "DEQUANTIZE" not in counts and counts["CONV_2D"] == 10
    assert card["tflite_input"].startswith("int8") and card["input_zero_point"] == -128
    assert card["input_scale"] == 1.0  # fixed, not calibrated: int8 = pixel - 128, lossless
    assert card["tflite_input_folded"] is True  # the student's default: 1/std folded into its stem conv
    assert card["trained_image_size"] == 128 and card["image_size"] == 32


@pytest.mark.litert
def test_tflite_carries_its_spec_and_matches_pytorch(exported_tflite, synth_manifest):
    from kndnet.checkpoint import load_model
    from kndnet.deploy.export import load_images
    from kndnet.inference import TorchPredictor, open_predictor
    predictor = open_predictor(exported_tflite / "model_int8.tflite")
    _, shipped = load_model(SHIPPED_CHECKPOINT)
    assert predictor.spec == load_model(exported_tflite / "model.ckpt")[1]  # the whole spec, from the file alone
    assert predictor.spec.image_size == 32 and predictor.spec.class_codes == shipped.class_codes
    images, _ = load_images(str(synth_manifest), "test", predictor.spec, 0)
    reference = TorchPredictor(exported_tflite / "model.ckpt").logits(images)
    candidate = predictor.logits(images)
    assert np.mean(reference.argmax(1) == candidate.argmax(1)) >= 0.9
    # int8 rounding, not a different function: most logits within a tenth, all of them tracking fp32's. Not the
    # largest difference: at 32 px on generated images a weight set can have a rare outlier (2.1 for the runs/v13
    # student, one logit of 224; median 0.029, correlation 0.994); real-image parity is test_shipped_student_*
    diff = np.abs(reference - candidate)
    assert np.median(diff) < 0.1 and np.corrcoef(reference.ravel(), candidate.ravel())[0, 1] > 0.98
    assert np.percentile(diff, 99) < 1.5 and np.abs((reference - candidate).mean(axis=0)).max() < 0.3  # no class off


@pytest.mark.litert
def test_a_colour_constancy_student_exports_full_integer_with_the_white_balance_on_the_device(
        synth_manifest, tmp_path, monkeypatch):
    """Shades of Gray stays out of the int8 graph (its powers would stay float); LiteRT, TFLite Micro and the
    generated main.cc white-balance the pixels first, and the result tracks the PyTorch model, layer included."""
    from kndnet.deploy.export import load_images
    from kndnet.deploy.tflite_export import op_census
    from kndnet.deploy.tflite_micro import run_micro
    from kndnet.inference import TorchPredictor, open_predictor
    from kndnet.inference_tflite import TflitePredictor
    payload = torch.load(SHIPPED_CHECKPOINT, weights_only=True)  # the shipped weights, with the layer switched on
    payload["kndnet"]["spec"]["color_constancy"] = "shades_of_gray"
    payload["kndnet"]["config"]["model"]["color_constancy"] = "shades_of_gray"
    torch.save(payload, tmp_path / "sog.ckpt")
    out = tmp_path / "export"
    assert main(["export", "--model", str(tmp_path / "sog.ckpt"), "--image-size", "32", "--tflite", "--c-array",
                 "--calib", str(synth_manifest), "--calib-count", "16", "--out", str(out)]) == 0
    path = out / "model_int8.tflite"
    counts, floats = op_census(path)
    assert floats == [] and "POW" not in counts
    predictor = open_predictor(path)
    assert predictor.spec.color_constancy == "shades_of_gray"
    images, _ = load_images(str(synth_manifest), "test", predictor.spec, 0)
    images = (images.float() * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)).round().to(torch.uint8)  # a cast
    reference = TorchPredictor(out / "model.ckpt").logits(images)
    candidate = predictor.logits(images)
    assert np.mean(reference.argmax(1) == candidate.argmax(1)) >= 0.9
    assert np.median(np.abs(reference - candidate)) < 0.1
    micro = run_micro(path, images[:8]).outputs
    assert np.abs(micro - TflitePredictor(path, reference=True).raw_outputs(images[:8])).max() <= 1
    # without the device step the graph sees the cast: the white balance is what makes it match
    monkeypatch.setattr("kndnet.inference_tflite.device_pixels", lambda pixels, spec: pixels)
    assert np.median(np.abs(reference - predictor.logits(images))) > np.median(np.abs(reference - candidate))
    assert "white_balance(rgb, kKndnetInputSize * kKndnetInputSize);" in (out / "main.cc").read_text()
    assert "## Preprocessing" in (out / "MODEL_CARD.md").read_text()


def _micro_and_litert(path, images):
    """The file in TFLM and in LiteRT's reference kernels, driven here through each package's own API
    (input quantised as pixel / scale + zero point, written out here); int8 outputs, N x C."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from tflite_micro.python.tflite_micro import runtime
    data = path.read_bytes()
    micro = runtime.Interpreter.from_bytes(data, arena_size=4 * 1024 * KB)
    lite = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    lite.allocate_tensors()
    (scale, zero), = [lite.get_input_details()[0]["quantization"]]
    x = np.clip(np.round(images.permute(0, 2, 3, 1).numpy() / scale + zero), -128, 127).astype(np.int8)
    out_micro, out_lite = [], []
    for one in x:
        micro.set_input(one[None], 0)
        micro.invoke()
        out_micro.append(np.array(micro.get_output(0))[0].astype(int))
        lite.set_tensor(lite.get_input_details()[0]["index"], one[None])
        lite.invoke()
        out_lite.append(lite.get_tensor(lite.get_output_details()[0]["index"])[0].astype(int))
    return micro, np.stack(out_micro), np.stack(out_lite)


@pytest.mark.litert
def test_tflite_micro_runs_the_file_as_litert_does(exported_tflite, synth_manifest, capfd):
    from kndnet.deploy.export import load_images
    from kndnet.inference import open_predictor
    path = exported_tflite / "model_int8.tflite"
    images, _ = load_images(str(synth_manifest), "test", open_predictor(path).spec, 8)
    micro, out_micro, out_lite = _micro_and_litert(path, images)
    assert np.abs(out_micro - out_lite).max() <= 1
    assert np.array_equal(out_micro.argmax(1), out_lite.argmax(1))
    capfd.readouterr()
    micro.print_allocations()  # the arena, read here from the C++ printout by pytest's fd capture
    printed = capfd.readouterr()
    arena = int(printed.err.split("Arena allocation total ")[1].split()[0])
    card = json.loads((exported_tflite / "model_card.json").read_text())
    assert card["tflm_arena_bytes"] == arena < 256 * KB
    assert card["tflm_vs_litert_ref_max_abs_diff_steps"] <= 1
    assert "TensorFlow Lite Micro arena (RAM), measured" in (exported_tflite / "MODEL_CARD.md").read_text()


@pytest.mark.litert
def test_c_array_matches_the_exported_file(exported_tflite):
    model = (exported_tflite / "model_int8.tflite").read_bytes()
    source = (exported_tflite / "model_data.cc").read_text()
    assert f"g_kndnet_model_data_len = {len(model)};" in source
    assert source.count("0x") == len(model) and "0x54, 0x46, 0x4c, 0x33" in source  # 'TFL3' identifier
    assert "kKndnetInputSize = 32" in (exported_tflite / "model_data.h").read_text()


@pytest.mark.litert
def test_evaluate_and_predict_accept_tflite(exported_tflite, synth_manifest, synth_dir, tmp_path, capsys):
    model = str(exported_tflite / "model_int8.tflite")
    assert main(["evaluate", "--model", model, "--data", str(synth_manifest), "--out", str(tmp_path / "ev"),
                 "--resamples", "10"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    card = json.loads((exported_tflite / "model_card.json").read_text())
    assert metrics["accuracy"] == pytest.approx(card["tflite_int8_accuracy"], abs=1e-3)
    image = next(synth_dir.rglob("*.jpg"))
    capsys.readouterr()
    assert main(["predict", str(image), "--model", model, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"]


@pytest.mark.litert
def test_litert_bench_runner_runs_batch_one_and_thirty_two(exported_tflite):
    from kndnet.deploy.bench import _litert_runner
    path = exported_tflite / "model_int8.tflite"
    assert _litert_runner(path, np.zeros((1, 3, 32, 32), np.float32), 1)().shape == (1, 7)
    assert _litert_runner(path, np.zeros((32, 3, 32, 32), np.float32), 2)().shape == (32, 7)


# --- with the extra, on the real images (../shared/data/ham10000) ------------------------------------

def _export_real(real_data, out, *extra):
    """The shipped student exported as its card says it was (with --fold-input or without)."""
    shipped_card = json.loads((ASSETS / "model_card.json").read_text())
    fold = ["--fold-input"] if shipped_card.get("tflite_input_folded") else ["--no-fold-input"]
    assert main(["export", "--model", "kndnet-student", "--tflite", "--calib", str(real_data), "--out", str(out),
                 *fold, *extra]) == 0
    return json.loads((out / "model_card.json").read_text())


def _test_split(real_data, export_dir):
    from kndnet.checkpoint import load_config_from_checkpoint, load_model
    from kndnet.deploy.export import load_images
    _, spec = load_model(export_dir / "model.ckpt")
    cfg = load_config_from_checkpoint(export_dir / "model.ckpt")
    return load_images(str(real_data), "test", spec, 0, data_cfg=cfg.data)


@pytest.mark.litert
@pytest.mark.timeout(1800)  # reads 1,097 real images and converts once
def test_shipped_student_tflite_parity_on_the_test_split(real_data, tmp_path):
    """LiteRT int8 (XNNPACK) vs the fp32 PyTorch student on the held-out split, recomputed here: macro-F1
    within 1 point and top-1 agreement >= 0.97 (issue #14). This export measured 0.983 (README), 0.970 before
    the global average pool got its own int8 range; a broken quantisation costs tens of points and fails.
    The card must say the same."""
    from kndnet.inference import TorchPredictor
    from kndnet.inference_tflite import TflitePredictor
    out = tmp_path / "exp128"
    card = _export_real(real_data, out)
    images, labels = _test_split(real_data, out)
    reference = TorchPredictor(SHIPPED_CHECKPOINT).logits(images).argmax(1)
    candidate = TflitePredictor(out / "model_int8.tflite").logits(images).argmax(1)
    agreement = float(np.mean(reference == candidate))
    f1 = [skm.f1_score(labels, p, average="macro", labels=range(7)) for p in (reference, candidate)]
    assert len(images) == 897 and agreement >= 0.97 and abs(f1[0] - f1[1]) <= 0.01
    assert card["tflite_int8_vs_torch_fp32_top1_agreement"] == pytest.approx(agreement, abs=1e-4)
    assert card["tflite_int8_float_ops"] == 0


@pytest.mark.litert
@pytest.mark.timeout(1800)
def test_64px_student_fits_a_microcontroller(real_data, tmp_path):
    """The 64 px export (shipped weights, trained at 128 px) runs in TFLite Micro within 256 KB of RAM and
    256 KB of flash, with LiteRT's reference-kernel outputs on real test images."""
    out = tmp_path / "exp64"
    card = _export_real(real_data, out, "--image-size", "64", "--c-array")
    images, _ = _test_split(real_data, out)
    _, out_micro, out_lite = _micro_and_litert(out / "model_int8.tflite", images[:16])
    assert np.abs(out_micro - out_lite).max() <= 1 and np.array_equal(out_micro.argmax(1), out_lite.argmax(1))
    assert card["tflm_arena_bytes"] <= 256 * KB and (out / "model_int8.tflite").stat().st_size <= 256 * KB
