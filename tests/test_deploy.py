"""Export, int8, graph costs, predict on bad inputs, Grad-CAM and bench on a tiny trained student."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image
from sklearn import metrics as skm

from kndnet.checkpoint import load_model
from kndnet.classes import CLASS_CODES
from kndnet.cli import main, portable_command_line
from kndnet.config import IMAGENET_MEAN, IMAGENET_STD
from kndnet.cpu import exact_int8_options
from kndnet.deploy.graph_stats import graph_stats
from kndnet.deploy.onnx_export import check_onnx_parity, export_onnx
from kndnet.errors import KNDNetError
from kndnet.evaluation.run import evaluation_rows
from kndnet.explain import explain_batch, grad_cam
from kndnet.inference import eval_dataset
from kndnet.training.fit import fit
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def student(synth_manifest, tmp_path_factory):
    run = tmp_path_factory.mktemp("deploy_student")
    return fit(tiny_config("student", synth_manifest, **{"train.epochs": 8}), run)["best_checkpoint"]


@pytest.fixture(scope="module")
def exported(student, synth_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    assert main(["export", "--model", student, "--int8", "--calib", str(synth_manifest), "--out", str(out),
                 "--calib-count", "40"]) == 0
    return out


def test_export_writes_onnx_int8_and_model_card(exported):
    card = json.loads((exported / "model_card.json").read_text())
    assert card["parameters"] == 148_855
    assert card["onnx_fp32_vs_torch_max_abs_logit_diff"] < 1e-3
    assert card["int8_bytes"] < 200 * 1024
    text = (exported / "MODEL_CARD.md").read_text()
    assert "Not a medical device" in text and "Tschandl" in text and "Decision rule" not in text
    mel = card["int8_sensitivity"]["mel"]
    assert "## Sensitivity by class (test split)" in text
    assert f"| mel | {card['eval_images_per_class']['mel']} | {card['fp32_sensitivity']['mel']:.3f} |" in text
    assert f"Melanoma sensitivity of the int8 ONNX model on the test split is {mel:.2f}" in card["limitations"][-1]
    meta = {p.key: p.value for p in onnx.load(str(exported / "model_int8.onnx")).metadata_props}
    assert json.loads(meta["class_names"])[4] == "mel" and meta["input_size"] == "32"


def test_the_model_card_keeps_the_export_command_and_its_summary(exported):
    card = json.loads((exported / "model_card.json").read_text())
    assert card["export_command"].startswith("kndnet export --model ")
    assert card["export_command"].endswith(f"--out {portable_command_line([str(exported)])[7:]} --calib-count 40")
    assert "/tmp/" not in card["export_command"] and str(exported) not in card["export_command"]
    provenance = (exported / "MODEL_CARD.md").read_text().split("## Provenance")[1]
    assert f"$ {card['export_command']}" in provenance
    int8_line = f"int8 ONNX: {card['int8_bytes'] / 1024:.1f} KB; on test: accuracy fp32 {card['fp32_accuracy']:.3f}"
    assert int8_line in provenance


def test_onnx_models_have_dynamic_batch(exported):
    import onnxruntime as ort
    for name in ("model_fp32.onnx", "model_int8.onnx"):
        session = ort.InferenceSession(str(exported / name))
        out = session.run(None, {"image": np.zeros((5, 3, 32, 32), np.float32)})[0]
        assert out.shape == (5, 7)


def _held_out(manifest, spec):
    """Test-split images (uint8, decoded as the spec says) and labels, and the same images normalised
    here, as the ONNX input."""
    rows = evaluation_rows(str(manifest), "test")
    dataset = eval_dataset(rows, spec)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    return images, dataset.labels.numpy(), ((images.float() - mean) / std).numpy()


def _run_onnx(path, x):
    """The file's outputs as kndnet computes them: on x86 CPUs without VNNI, int8 QDQ arithmetic unfused."""
    import onnxruntime as ort
    options = exact_int8_options(ort.SessionOptions())
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def check_export_against_pytorch(checkpoint, out_dir, manifest, agreement_floor):
    """Run the checkpoint with PyTorch and both exported files with ONNX Runtime, here, on held-out
    images; check the graphs and every number the model card claims about them."""
    model, spec = load_model(checkpoint)
    _, labels, x = _held_out(manifest, spec)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    fp32, int8 = _run_onnx(out_dir / "model_fp32.onnx", x), _run_onnx(out_dir / "model_int8.onnx", x)
    assert np.abs(fp32 - reference).max() < 1e-3
    assert (fp32.argmax(1) == reference.argmax(1)).all()
    agreement = np.mean(int8.argmax(1) == fp32.argmax(1))
    assert agreement >= agreement_floor
    card = json.loads((out_dir / "model_card.json").read_text())
    assert card["int8_vs_fp32_images"] == len(labels)
    assert card["int8_vs_fp32_top1_agreement"] == pytest.approx(agreement, abs=1e-4)
    assert card["int8_vs_fp32_max_abs_logit_diff"] == pytest.approx(np.abs(int8 - fp32).max(), rel=1e-3, abs=1e-5)
    for name, logits in (("fp32", fp32), ("int8", int8)):
        pred = logits.argmax(1)
        assert card[f"{name}_accuracy"] == pytest.approx(np.mean(pred == labels), abs=1e-4)
        assert card[f"{name}_macro_f1"] == pytest.approx(
            skm.f1_score(labels, pred, labels=np.unique(labels), average="macro", zero_division=0), abs=1e-4)
        recall = skm.recall_score(labels, pred, labels=range(len(CLASS_CODES)), average=None, zero_division=0)
        assert card[f"{name}_sensitivity"] == {code: pytest.approx(recall[i], abs=1e-4) if (labels == i).any()
                                               else None for i, code in enumerate(CLASS_CODES)}
    assert card["eval_images_per_class"] == {code: int((labels == i).sum()) for i, code in enumerate(CLASS_CODES)}
    # accuracy can only differ on the images where the two disagree
    assert abs(card["fp32_accuracy"] - card["int8_accuracy"]) <= 1 - agreement + 1e-4


def test_exported_files_match_the_checkpoint_run_here(exported, student, synth_manifest):
    check_export_against_pytorch(student, exported, synth_manifest, agreement_floor=0.9)


def test_parity_check_rejects_a_graph_of_other_weights(student, tmp_path):
    model, spec = load_model(student)
    other, _ = load_model(student)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = export_onnx(other, spec, tmp_path / "other.onnx")
    images = torch.randint(0, 256, (4, 3, spec.image_size, spec.image_size), dtype=torch.uint8)
    with pytest.raises(KNDNetError, match="differs from PyTorch"):
        check_onnx_parity(model, spec, path, images)


def _graph(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_peak_activation_memory_is_the_largest_live_set(tmp_path):
    # image -> Relu a -> Relu b -> Add(a, b) -> y: `a` stays alive until the Add
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 4, 4])
    nodes = [helper.make_node("Relu", ["image"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["y"])]
    path = tmp_path / "g.onnx"
    onnx.save(_graph(nodes, [x], [y]), str(path))
    stats = graph_stats(path, 4, bytes_per_element=1)
    assert stats["peak_activation_bytes"] == 3 * 48  # a, b and y alive at the Add (x died at the first Relu)
    assert stats["macs"] == 0


def test_student_graph_macs_match_the_method(exported):
    assert graph_stats(exported / "model_fp32.onnx", 224)["macs"] == pytest.approx(117e6, rel=0.01)


def _bad_inputs(tmp_path, synth_dir):
    good = next(synth_dir.rglob("*.jpg"))
    (tmp_path / "good.jpg").write_bytes(good.read_bytes())
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:200])
    Image.new("L", (50, 40), 128).save(tmp_path / "gray.png")
    Image.new("RGBA", (30, 30), (10, 200, 30, 128)).save(tmp_path / "alpha.png")
    return tmp_path


def test_predict_reports_bad_files_and_still_predicts_the_rest(student, synth_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    folder = _bad_inputs(tmp_path / "in", synth_dir)
    code = main(["predict", str(folder), str(tmp_path / "missing.jpg"), "--model", student, "--format", "json"])
    assert code == 1
    results = {r["file"].split("/")[-1]: r for r in json.loads(capsys.readouterr().out)}
    assert results["notes.jpg"]["error"] and results["cut.jpg"]["error"] and results["missing.jpg"]["error"]
    for ok in ("good.jpg", "gray.png", "alpha.png"):
        probs = [t["probability"] for t in results[ok]["top"]]
        assert results[ok]["error"] is None and len(probs) == 3 and probs == sorted(probs, reverse=True)


def test_predict_table_and_exit_zero_when_all_good(student, synth_dir, capsys):
    image = next(synth_dir.rglob("*.jpg"))
    assert main(["predict", str(image), "--model", student, "--top-k", "2"]) == 0
    assert image.name in capsys.readouterr().out


def test_grad_cam_matches_input_size_in_unit_range_and_releases_hooks(student):
    model, spec = load_model(student)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    cams, probs = explain_batch(model, spec, images)
    assert cams.shape == (2, 32, 32) and cams.min() >= 0 and cams.max() <= 1
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    with grad_cam(model):
        pass
    assert not any(m._forward_hooks for m in model.modules())


def test_explain_writes_valid_overlays(student, synth_dir, tmp_path):
    images = [str(p) for p in list(synth_dir.rglob("*.jpg"))[:2]]
    assert main(["explain", *images, "--model", student, "--out", str(tmp_path), "--target-class", "mel"]) == 0
    pngs = list(tmp_path.glob("*_gradcam.png"))
    assert len(pngs) == 2
    with Image.open(pngs[0]) as img:
        assert img.size[0] > 200 and np.asarray(img.convert("L")).std() > 5


def test_bench_reports_consistent_figures_for_three_runtimes(student, tmp_path):
    """Orderings that hold on any machine, however busy (speed itself is measured in benchmarks/)."""
    assert main(["bench", "--model", student, "--out", str(tmp_path), "--repeats", "5"]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())[0]
    for runtime in ("torch_eager", "ort_fp32", "ort_int8"):
        for threads in ("1thread", f"{os.cpu_count()}threads"):
            assert 0 < result[f"{runtime}_{threads}_b1_p50_ms"] <= result[f"{runtime}_{threads}_b1_p95_ms"]
    assert result["int8_vs_eager_1thread_b1_speedup"] == pytest.approx(
        result["torch_eager_1thread_b1_p50_ms"] / result["ort_int8_1thread_b1_p50_ms"], abs=0.006)
    assert result["int8_onnx_bytes"] < result["fp32_onnx_bytes"] / 2


def test_predict_csv_is_parseable_with_commas_in_errors(student, synth_dir, tmp_path, capsys):
    import csv
    import io
    bad = tmp_path / "a,b.jpg"
    bad.write_text("x")
    image = next(synth_dir.rglob("*.jpg"))
    assert main(["predict", str(image), str(bad), "--model", student, "--format", "csv", "--top-k", "2"]) == 1
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3 and rows[2]["file"].endswith("a,b.jpg") and rows[2]["error"]


def test_bench_times_the_exported_files_when_given_the_export(student, exported, tmp_path):
    """`bench --export` measures the files that ship, not a re-export quantised with random images."""
    assert main(["bench", "--model", student, "--export", str(exported), "--out", str(tmp_path),
                 "--repeats", "3"]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())[0]
    assert result["onnx_files"] == "exported"
    assert result["int8_onnx_bytes"] == (exported / "model_int8.onnx").stat().st_size
    assert result["fp32_onnx_bytes"] == (exported / "model_fp32.onnx").stat().st_size
    assert not list(tmp_path.glob("*.onnx"))  # nothing exported again
