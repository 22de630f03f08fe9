"""Run a trained model on images: PyTorch checkpoints, exported ONNX and LiteRT models behind one interface.

A Predictor takes uint8 N x 3 x H x W batches at the model's input size and returns logits divided by
the calibration temperature. Test-time augmentation averages softmax over flipped copies.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from kndnet.checkpoint import ModelSpec, load_model
from kndnet.cpu import exact_int8_options
from kndnet.data.datasets import EvalView, LesionDataset
from kndnet.data.images import load_rgb_array
from kndnet.data.transforms import eval_view
from kndnet.errors import CheckpointError

TTA_FLIPS = {"none": [()], "hflip": [(), (-1,)], "flips": [(), (-1,), (-2,), (-2, -1)]}
ONNX_SPEC_KEY = "kndnet_spec"


class Predictor(Protocol):
    spec: ModelSpec

    def logits(self, images: torch.Tensor) -> np.ndarray: ...


def eval_dataset(rows: pd.DataFrame, spec: ModelSpec) -> LesionDataset:
    """A split's images as the model was validated on them: decoded at spec.eval_load_size, resized to
    spec.image_size (uint8; `normalise` follows on the batch)."""
    return LesionDataset(rows, EvalView(spec.image_size), load_size=spec.eval_load_size)


def eval_images(rows: pd.DataFrame, spec: ModelSpec) -> tuple[torch.Tensor, np.ndarray]:
    """All of `rows`' images, preprocessed as `eval_dataset` does, stacked (uint8 N x 3 x S x S), and their
    labels: for the few hundred images an export or an int8 check reads at once."""
    dataset = eval_dataset(rows, spec)
    return torch.stack([dataset[i]["image"] for i in range(len(dataset))]), dataset.labels.numpy()


def load_image(path: str | Path, spec: ModelSpec) -> torch.Tensor:
    """One image file, preprocessed as `eval_dataset` does: uint8 3 x H x W."""
    return eval_view(torch.from_numpy(load_rgb_array(path, spec.eval_load_size)).permute(2, 0, 1), spec.image_size)


class TorchPredictor:
    def __init__(self, checkpoint: str | Path) -> None:
        self.model, self.spec = load_model(checkpoint)
        self.source = str(checkpoint)

    @torch.no_grad()
    def raw_logits(self, images: torch.Tensor) -> np.ndarray:
        """The network's own output, before the calibration temperature (what an export must reproduce)."""
        return self.model(self.spec.normalise(images)).numpy()

    def logits(self, images: torch.Tensor) -> np.ndarray:
        return self.raw_logits(images) / self.spec.calibration_temperature


class OnnxPredictor:
    def __init__(self, path: str | Path, threads: int = 0, exact_int8: bool = True) -> None:
        """`exact_int8` False: ONNX Runtime's fused int8 kernels even where they saturate (kndnet.cpu), for a
        check of what an int8 distillation teacher, which runs them, computes."""
        import onnxruntime as ort
        options = ort.SessionOptions()
        if exact_int8:  # int8 files compute the same on every CPU
            options = exact_int8_options(options)
        options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own Fail/InvalidProtobuf/... types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{path}: not a loadable ONNX model (empty, truncated or not ONNX: {first}); "
                                  "export it again with `kndnet export`") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if ONNX_SPEC_KEY not in meta:
            raise CheckpointError(f"{path}: ONNX model has no '{ONNX_SPEC_KEY}' metadata; export it "
                                  "with `kndnet export`")
        try:
            spec = json.loads(meta[ONNX_SPEC_KEY])
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path}: '{ONNX_SPEC_KEY}' metadata is not JSON ({err})") from None
        self.spec = ModelSpec.from_dict(spec, path)
        self.input_name = self.session.get_inputs()[0].name
        self.source = str(path)

    def raw_logits(self, images: torch.Tensor) -> np.ndarray:
        """The graph's output as the file emits it (the calibration temperature lives in its metadata)."""
        return self.session.run(None, {self.input_name: self.spec.normalise(images).numpy()})[0]

    def logits(self, images: torch.Tensor) -> np.ndarray:
        return self.raw_logits(images) / self.spec.calibration_temperature


def open_predictor(path: str | Path) -> Predictor:
    """A predictor for a .ckpt, .onnx or .tflite file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} not found")
    if path.suffix == ".onnx":
        return OnnxPredictor(path)
    if path.suffix == ".tflite":
        from kndnet.inference_tflite import TflitePredictor  # optional extra: imported only when asked
        return TflitePredictor(path)
    return TorchPredictor(path)


class EnsemblePredictor:
    """Several models scored as one: the mean of their logits (each divided by its own calibration T).

    Why the mean logit: it is the averaged-logit teacher ensemble of the KD literature (Hinton et al. 2015),
    e.g. EfficientNet-Lite0/1/2 teachers trained on the same split. The images are decoded once, so members
    must preprocess alike (input size, load size, normalisation, classes); otherwise it refuses, naming both.
    """

    def __init__(self, members: list[Predictor]) -> None:
        first = members[0]
        for other in members[1:]:
            if _preprocessing(other.spec) != _preprocessing(first.spec):
                raise CheckpointError(f"{other.source} preprocesses as {_preprocessing(other.spec)} but "
                                      f"{first.source} as {_preprocessing(first.spec)} (input size, load size, "
                                      "mean, std, classes); ensemble only models that see the same pixels")
        self.members = members
        self.spec = replace(first.spec, calibration_temperature=1.0)  # members apply their own
        self.source = " + ".join(m.source for m in members)

    def logits(self, images: torch.Tensor) -> np.ndarray:
        return np.mean([m.logits(images) for m in self.members], axis=0)


def _preprocessing(spec: ModelSpec) -> tuple:
    return spec.image_size, spec.eval_load_size, tuple(spec.mean), tuple(spec.std), tuple(spec.class_codes)


def open_predictors(paths: list[str | Path]) -> Predictor:
    """One predictor, or the logit-averaging ensemble of several."""
    members = [open_predictor(p) for p in paths]
    return members[0] if len(members) == 1 else EnsemblePredictor(members)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def view_probs(predictor: Predictor, images: torch.Tensor, tta: str = "none") -> list[np.ndarray]:
    """Softmax probabilities of each TTA view, the un-flipped images first; a list of N x C."""
    if tta not in TTA_FLIPS:
        raise ValueError(f"unknown --tta {tta!r}; choose {', '.join(TTA_FLIPS)}")
    views = [images.flip(dims) if dims else images for dims in TTA_FLIPS[tta]]
    return [softmax(predictor.logits(v)) for v in views]


def predict_probs(predictor: Predictor, images: torch.Tensor, tta: str = "none") -> np.ndarray:
    """Softmax probabilities, averaged over the TTA flips; N x C."""
    return np.mean(view_probs(predictor, images, tta), axis=0)
