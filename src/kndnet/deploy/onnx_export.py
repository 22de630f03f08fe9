"""ONNX export with the model's spec in the metadata, and a parity check against PyTorch.

The exported graph takes normalised float input N x 3 x S x S (dynamic batch) and returns logits
(calibration temperature is applied by the runtime wrapper, read from the metadata like the
normalisation, so the graph stays the trained one).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from kndnet.checkpoint import ModelSpec
from kndnet.errors import KNDNetError
from kndnet.inference import ONNX_SPEC_KEY, OnnxPredictor
from kndnet.io import atomic_path

OPSET = 17


def export_onnx(model: torch.nn.Module, spec: ModelSpec, path: str | Path,
                output_names: tuple[str, ...] = ("logits",)) -> Path:
    """Write `model` as ONNX (opset 17, dynamic batch) with spec, class names and normalisation; a model with
    several outputs names each (logits first: every reader of the file takes the first output)."""
    dummy = torch.zeros(1, 3, spec.image_size, spec.image_size)
    batch_axes = {name: {0: "batch"} for name in ("image", *output_names)}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model.eval().to(memory_format=torch.contiguous_format), (dummy,), str(tmp),
                          input_names=["image"], output_names=list(output_names), opset_version=OPSET,
                          dynamic_axes=batch_axes, dynamo=False)
        graph = onnx.load(str(tmp))
        _set_metadata(graph, spec)
        onnx.save(graph, str(tmp))
    return Path(path)


def _set_metadata(graph: onnx.ModelProto, spec: ModelSpec) -> None:
    values = {ONNX_SPEC_KEY: json.dumps(spec.to_dict()), "class_names": json.dumps(list(spec.class_codes)),
              "input_size": str(spec.image_size), "mean": json.dumps(list(spec.mean)),
              "std": json.dumps(list(spec.std)), "input_format": "RGB float32 NCHW, (x/255 - mean)/std"}
    del graph.metadata_props[:]
    for key, value in values.items():
        graph.metadata_props.add(key=key, value=value)


@dataclass
class Parity:
    max_abs_logit_diff: float
    top1_agreement: float
    images: int

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_max_abs_logit_diff": round(self.max_abs_logit_diff, 6),
                f"{prefix}_top1_agreement": round(self.top1_agreement, 4), f"{prefix}_images": self.images}


def logits_parity(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    return Parity(float(np.abs(reference - candidate).max()),
                  float(np.mean(reference.argmax(1) == candidate.argmax(1))), len(reference))


def check_onnx_parity(model: torch.nn.Module, spec: ModelSpec, onnx_path: Path, images: torch.Tensor,
                      tolerance: float = 1e-3) -> Parity:
    """Compare PyTorch and ONNX Runtime logits on uint8 `images`; raise past `tolerance`."""
    with torch.no_grad():
        reference = model.eval()(spec.normalise(images)).numpy()
    candidate = OnnxPredictor(onnx_path).raw_logits(images)  # raw logits on both sides
    parity = logits_parity(reference, candidate)
    if parity.max_abs_logit_diff > tolerance or parity.top1_agreement < 1.0:
        raise KNDNetError(f"{onnx_path}: ONNX output differs from PyTorch (max |logit diff| "
                          f"{parity.max_abs_logit_diff:.2e} > {tolerance:.0e} or top-1 agreement "
                          f"{parity.top1_agreement:.3f} < 1); the export is not trustworthy")
    return parity
