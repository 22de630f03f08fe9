"""Tiny recipes that keep training tests fast on 2 cores; hand-made evaluation folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from kndnet.classes import CLASS_CODES
from kndnet.config import Config, load_config

FAST = {"data.image_size": 32, "data.batch_size": 16, "data.num_workers": 0,
        "train.progress_bar": False, "train.compile": False, "train.log_every_n_steps": 1}


def tiny_config(role: str, data: Path, **overrides: object) -> Config:
    extra = {"train.epochs": 2, "train.lr": 3e-3}
    if role == "teacher":
        extra.update({"model.arch": "test_efficientnet", "model.pretrained": "none-quiet"})
    return load_config(role=role, overrides={**FAST, **extra, "data.path": str(data), **overrides})


def hand_made_evaluation(folder: Path, data: str, ids: list[str], seed: int, score: float = 0.5,
                         split: str = "test") -> Path:
    """A hand-made evaluation folder: metrics.json and predictions.csv, as `kndnet evaluate` writes them
    (`score` for each headline metric in metrics.json; the predictions are random)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(7), size=len(ids))
    labels = [CLASS_CODES[i % 7] for i in range(len(ids))]
    table = pd.DataFrame({"image_id": ids, "true_label": labels,
                          "predicted_label": [CLASS_CODES[k] for k in probs.argmax(1)]})
    for k, code in enumerate(CLASS_CODES):
        table[f"prob_{code}"] = probs[:, k]
    table.to_csv(folder / "predictions.csv", index=False)
    metrics = {"data": data, "split": split, "images": len(ids), "melanoma_sensitivity": 0.5, "ece": 0.1,
               "roc_auc_macro": 0.8}
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        metrics.update({name: score, f"{name}_ci_low": score - 0.1, f"{name}_ci_high": score + 0.1})
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def predictions_folder(folder: Path, ids: list[str], probs: np.ndarray, labels: list[str] | None = None) -> Path:
    """A folder with only a predictions.csv, as `kndnet evaluate` writes it (every true label nv unless given)."""
    folder.mkdir()
    frame = pd.DataFrame(probs, columns=[f"prob_{c}" for c in CLASS_CODES])
    frame.insert(0, "image_id", ids)
    frame.insert(1, "true_label", labels if labels is not None else "nv")
    frame.to_csv(folder / "predictions.csv", index=False)
    return folder


def assert_onnx_fp32_and_int8_track(model, spec, folder: Path) -> None:
    """A student variant's fp32 ONNX export computes what PyTorch does, and its int8 copy stays close."""
    import onnxruntime as ort
    import torch

    from kndnet.deploy.onnx_export import export_onnx
    from kndnet.deploy.quantize import quantize_int8
    size = spec.image_size
    fp32 = export_onnx(model, spec, folder / "fp32.onnx")
    pixels = (torch.rand(32, 3, size, size, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    int8 = quantize_int8(fp32, folder / "int8.onnx", pixels, spec)
    x = spec.normalise(pixels[:16])
    with torch.no_grad():
        reference = model(x).numpy()
    fp32_out, int8_out = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                          .run(None, {"image": x.numpy()})[0] for p in (fp32, int8))
    np.testing.assert_allclose(fp32_out, reference, atol=1e-4)
    assert np.abs(int8_out - reference).max() < 0.5 * np.abs(reference).max()


def randomise_batchnorm_statistics(model) -> None:
    """Give every BatchNorm2d non-trivial running statistics, so an untrained model's exports have folding to do."""
    import torch
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)


def assert_checkpoint_keeps_spec_key(model, spec, cfg, key: str, older_default: str, bad_value: str,
                                     bad_message: str, folder: Path):
    """A student option stored in the spec: the config carries it, a saved checkpoint rebuilds the same model,
    a spec without the key (an older file) means `older_default`, and an unknown value is refused by name.
    Returns the rebuilt model."""
    import pytest
    import torch

    from kndnet.checkpoint import ModelSpec, load_model, save_model_checkpoint
    from kndnet.errors import CheckpointError
    value = getattr(spec, key)
    assert getattr(spec.model_config(), key) == value
    rebuilt, rebuilt_spec = load_model(save_model_checkpoint(model, spec, cfg, folder / "m.ckpt"))
    assert rebuilt_spec == spec
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    older = {k: v for k, v in spec.to_dict().items() if k != key}
    assert getattr(ModelSpec.from_dict(older), key) == older_default
    with pytest.raises(CheckpointError, match=bad_message):
        ModelSpec.from_dict({**spec.to_dict(), key: bad_value})
    return rebuilt


def load_script(name: str, folder: str = "scripts"):
    """FOLDER/NAME.py as a module (the folder joins sys.path, as when the script runs, so the modules it imports
    from beside it resolve): scripts/ or benchmarks/."""
    import importlib
    import sys
    where = str(Path(__file__).resolve().parents[1] / folder)
    if where not in sys.path:
        sys.path.insert(0, where)
    return importlib.import_module(name)
