"""The `--tflite` / `--c-array` step of `kndnet export`: write model_int8.tflite and measure it.

Measured on the held-out images the ONNX int8 report uses: the LiteRT model (ai-edge-litert,
XNNPACK) against the fp32 PyTorch student (accuracy, macro-F1, top-1 agreement); the same file in
TensorFlow Lite Micro (its arena, and its outputs against LiteRT's reference kernels, the arithmetic
TFLM implements, and against XNNPACK); the file's size (its flash cost).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from kndnet.checkpoint import ModelSpec
from kndnet.deploy.c_array import write_c_array
from kndnet.deploy.onnx_export import logits_parity
from kndnet.deploy.tflite_export import convert_tflite, op_census, resolve_fold
from kndnet.deploy.tflite_micro import run_micro
from kndnet.evaluation.metrics import CI_METRICS
from kndnet.inference_tflite import TflitePredictor

MICRO_IMAGES = 64  # TFLM runs reference kernels, one image at a time: a sample of the held-out split


def scores(logits: np.ndarray, labels: np.ndarray, prefix: str) -> dict[str, float]:
    """Accuracy and macro-F1 exactly as `evaluate` computes them."""
    return {f"{prefix}_{name}": round(CI_METRICS[name](labels, logits), 4) for name in ("accuracy", "macro_f1")}


def export_tflite(out_dir: Path, model: torch.nn.Module, spec: ModelSpec, calib: torch.Tensor,
                  held_out: torch.Tensor, labels: np.ndarray, c_array: bool = False,
                  fold_input: bool | None = None) -> dict[str, Any]:
    """Write model_int8.tflite (and the C array) into `out_dir`; return the model card's entries, which say
    whether the input was folded (`fold_input`, or resolve_fold's default when None)."""
    fold_input = resolve_fold(model, fold_input)
    path = convert_tflite(model, spec, out_dir / "model_int8.tflite", calib, fold_input)
    counts, floats = op_census(path)
    litert = TflitePredictor(path)
    with torch.no_grad():
        reference = model.eval()(spec.normalise(held_out)).numpy()  # raw logits on both sides, as the files emit
    candidate = litert.raw_logits(held_out)
    card: dict[str, Any] = {"tflite_int8_bytes": path.stat().st_size, "tflite_int8_float_ops": len(floats),
                            "tflite_input_folded": fold_input,
                            "tflite_int8_ops": dict(counts), **_io(litert),
                            **scores(reference, labels, "torch_fp32"), **scores(candidate, labels, "tflite_int8"),
                            **logits_parity(reference, candidate).as_dict("tflite_int8_vs_torch_fp32")}
    card.update(micro_report(path, held_out[:MICRO_IMAGES]))
    if c_array:
        write_c_array(out_dir, path.read_bytes(), spec, card, sorted(counts), card["tflm_arena_bytes"])
    return card


def _io(predictor: TflitePredictor) -> dict[str, Any]:
    (in_scale, in_zero), (out_scale, out_zero) = predictor.input["quantization"], predictor.output["quantization"]
    return {"tflite_input": f"{np.dtype(predictor.input['dtype']).name} NHWC RGB pixels",
            "input_scale": float(in_scale), "input_zero_point": int(in_zero),
            "output_scale": float(out_scale), "output_zero_point": int(out_zero)}


def micro_report(path: Path, images: torch.Tensor) -> dict[str, Any]:
    """TFLM's arena for `path` and its outputs vs LiteRT (reference kernels and XNNPACK), in int8 steps."""
    micro = run_micro(path, images)
    ref = TflitePredictor(path, reference=True).raw_outputs(images).astype(np.int32)
    fast = TflitePredictor(path).raw_outputs(images).astype(np.int32)
    out = micro.outputs.astype(np.int32)
    return {"tflm_arena_bytes": micro.arena_bytes, "tflm_arena_head_bytes": micro.arena_head_bytes,
            "tflm_vs_litert_ref_max_abs_diff_steps": int(np.abs(out - ref).max()),
            "tflm_vs_litert_ref_top1_agreement": round(float(np.mean(out.argmax(1) == ref.argmax(1))), 4),
            "tflm_vs_litert_xnnpack_max_abs_diff_steps": int(np.abs(out - fast).max()),
            "tflm_vs_litert_xnnpack_top1_agreement": round(float(np.mean(out.argmax(1) == fast.argmax(1))), 4),
            "tflm_images": len(images)}
