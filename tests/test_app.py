"""`kndnet app` without a browser or Node: the class-map graph, the build, the server, the npm error."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from kndnet.app import build_app, serve_folder
from kndnet.app.build import CODE_FILES, MODEL_FILE, SPEC_FILE, WORKER
from kndnet.app.runtime import RUNTIME_FILES, runtime_dir
from kndnet.checkpoint import ModelSpec
from kndnet.deploy.cam_graph import CLASS_MAPS, add_class_maps, write_cam_model
from kndnet.deploy.onnx_export import export_onnx
from kndnet.errors import CheckpointError, KNDNetError
from kndnet.inference import OnnxPredictor
from kndnet.models.student import KNDNetStudent
from kndnet.shipped import SHIPPED_CHECKPOINT, SHIPPED_INT8


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, KNDNetStudent]:
    torch.manual_seed(0)
    model = KNDNetStudent(width=0.25).eval()
    spec = ModelSpec("kndnet_student", 0.25, 7, 0.15, 32)
    return export_onnx(model, spec, tmp_path_factory.mktemp("tiny") / "tiny.onnx"), model


@pytest.fixture
def stub_runtime(tmp_path: Path) -> Path:
    """Stand-ins for ONNX Runtime Web's files: the build copies them, it never runs them."""
    dist = tmp_path / "dist"
    dist.mkdir()
    for name in RUNTIME_FILES:
        (dist / name).write_bytes(b"stub " + name.encode())
    return dist


def test_class_maps_are_classifier_weights_times_features(tiny_onnx, tmp_path: Path) -> None:
    path, model = tiny_onnx
    grafted = write_cam_model(path, tmp_path / "cam.onnx")
    x = torch.randn(2, 3, 32, 32)
    logits, maps = ort.InferenceSession(str(grafted)).run(None, {"image": x.numpy()})
    with torch.no_grad():
        features = model.forward_features(x)
        expected = torch.einsum("kc,nchw->nkhw", model.classifier.weight, features).numpy()
        reference = model(x).numpy()
    assert maps.shape == (2, 7, 2, 2)
    np.testing.assert_allclose(maps, expected, atol=1e-4)
    np.testing.assert_allclose(logits, reference, atol=1e-4)
    # pooled maps plus the bias are the logits: the maps are exactly what the head sums
    np.testing.assert_allclose(maps.mean(axis=(2, 3)) + model.classifier.bias.detach().numpy(), logits, atol=1e-4)


def test_grafted_int8_model_keeps_the_shipped_logits(tmp_path: Path) -> None:
    grafted = write_cam_model(SHIPPED_INT8, tmp_path / "cam.onnx")
    x = np.random.default_rng(0).normal(size=(3, 3, 128, 128)).astype(np.float32)
    shipped = ort.InferenceSession(str(SHIPPED_INT8)).run(None, {"image": x})[0]
    session = ort.InferenceSession(str(grafted))
    assert [o.name for o in session.get_outputs()] == ["logits", CLASS_MAPS]  # logits first: OnnxPredictor reads [0]
    logits, maps = session.run(None, {"image": x})
    np.testing.assert_array_equal(logits, shipped)
    assert maps.shape[:2] == (3, 7)
    assert OnnxPredictor(grafted).spec == OnnxPredictor(SHIPPED_INT8).spec  # metadata carried over


def test_graph_without_pooled_linear_head_is_refused() -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    with pytest.raises(CheckpointError, match="no global-average-pool"):
        add_class_maps(helper.make_model(graph), "relu.onnx")


def test_build_writes_a_complete_app_from_the_model_metadata(tmp_path: Path, stub_runtime: Path) -> None:
    out = tmp_path / "app"
    built = build_app(out, runtime=stub_runtime)
    for name in [*CODE_FILES, WORKER, MODEL_FILE, SPEC_FILE, *(f"ort/{f}" for f in RUNTIME_FILES)]:
        assert (out / name).is_file(), name
    spec = OnnxPredictor(out / MODEL_FILE).spec
    page = json.loads((out / SPEC_FILE).read_text())
    assert (page["input_size"], page["load_size"]) == (spec.image_size, spec.eval_load_size)
    assert (page["mean"], page["std"], page["calibration_temperature"]) == (list(spec.mean), list(spec.std),
                                                                            spec.calibration_temperature)
    assert [c["code"] for c in page["classes"]] == list(spec.class_codes)
    assert page["classes"][4]["name"] == "Melanoma"
    worker = (out / WORKER).read_text()
    assert "__KNDNET" not in worker and '"model.onnx"' in worker and '"ort/ort-wasm-simd-threaded.wasm"' in worker
    assert built.model_bytes == (out / MODEL_FILE).stat().st_size
    assert built.runtime_bytes == sum(len(f"stub {f}") for f in RUNTIME_FILES)
    assert not list(out.glob(".staged*"))


def test_worker_cache_name_changes_with_the_model(tmp_path: Path, stub_runtime: Path, tiny_onnx) -> None:
    def version(out: Path) -> str:
        return next(line for line in (out / WORKER).read_text().splitlines() if line.startswith("const VERSION"))
    build_app(tmp_path / "a", runtime=stub_runtime)
    build_app(tmp_path / "b", str(tiny_onnx[0]), runtime=stub_runtime)
    assert version(tmp_path / "a") != version(tmp_path / "b")


def test_a_checkpoint_is_refused_with_the_export_command(tmp_path: Path, stub_runtime: Path) -> None:
    with pytest.raises(CheckpointError, match="kndnet export --model"):
        build_app(tmp_path / "app", str(SHIPPED_CHECKPOINT), runtime=stub_runtime)
    assert not (tmp_path / "app").exists()


def test_missing_npm_says_install_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on it
    with pytest.raises(KNDNetError, match="needs Node.js and npm"):
        runtime_dir(tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("node_modules"))


def test_server_sends_module_and_wasm_types(tmp_path: Path, stub_runtime: Path) -> None:
    build_app(tmp_path / "app", runtime=stub_runtime)
    with serve_folder(tmp_path / "app") as url:
        types = {name: urllib.request.urlopen(url + name).headers["Content-Type"]
                 for name in ("app.js", "ort/ort-wasm-simd-threaded.wasm", "ort/ort.wasm.bundle.min.mjs")}
    assert types == {"app.js": "text/javascript", "ort/ort-wasm-simd-threaded.wasm": "application/wasm",
                     "ort/ort.wasm.bundle.min.mjs": "text/javascript"}


def test_serving_a_folder_without_an_app_says_build_it(tmp_path: Path) -> None:
    with pytest.raises(KNDNetError, match="kndnet app --out"):
        with serve_folder(tmp_path):
            pass
