"""Where does the int8 LiteRT model lose agreement with fp32? One run, three quantised variants, one table.

Why: the shipped student's full-integer .tflite agrees with fp32 PyTorch on ~97% of images while its ONNX int8
model agrees on ~99%. This separates the causes on a held-out split (validation by default, so no choice is
made on test):

- weight-only int8 (ai-edge-quantizer, float activations): the cost of int8 weights alone;
- the PT2E quantiser's own simulation (the quantise/dequantise graph in PyTorch, before conversion): the cost
  of int8 activations as calibrated;
- the converted full-integer .tflite run in LiteRT: what ships;
- for reference, the ONNX Runtime int8 model `kndnet export --int8` writes (QDQ, uint8 activations).

Each row: top-1 agreement with fp32, the median over images of the largest absolute logit difference, and
macro-F1. `--per-layer N` adds where the simulation's error enters: the signal-to-quantisation-noise ratio of
each quantised op's output against fp32 (torchao's numeric debugger) on N images of the split. Needs the litert
extra (pip install kndnet[litert]).

    python scripts/tflite_error_sources.py kndnet-student --data runs/v3/manifest.csv --split val
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np
import torch

from kndnet.checkpoint import load_model
from kndnet.deploy import tflite_export as te
from kndnet.deploy.export import load_images
from kndnet.evaluation.metrics import CI_METRICS
from kndnet.inference_tflite import TflitePredictor, device_pixels
from kndnet.shipped import resolve_model


def run_float_tflite(path: Path, pixels: torch.Tensor) -> np.ndarray:
    """Logits of a float-in/float-out .tflite, one image per invoke (its batch is static 1)."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for image in pixels.numpy():
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


def weight_only_logits(model, spec, pixels: torch.Tensor, folder: Path) -> np.ndarray:
    from ai_edge_quantizer import quantizer, recipe
    te.convert_tflite(model, spec, folder / "float.tflite")
    q = quantizer.Quantizer(str(folder / "float.tflite"), recipe.weight_only_wi8_afp32())
    q.quantize().export_model(str(folder / "weight_only.tflite"), overwrite=True)
    return run_float_tflite(folder / "weight_only.tflite", pixels)


def simulated_logits(model, spec, calib: torch.Tensor, pixels: torch.Tensor) -> np.ndarray:
    """The PT2E quantise/dequantise graph that litert-torch converts, run in PyTorch (calibrated on the pixels a
    device feeds it, as `convert_tflite` does)."""
    edge = te.EdgeStudent(model, spec, te.resolve_fold(model, None)).eval()  # as export builds it by default
    sample = (torch.zeros(1, spec.image_size, spec.image_size, 3),)
    with torch.no_grad():
        qdq, _ = te._quantise(edge, sample, device_pixels(calib, spec))
        return torch.cat([qdq(pixels[i:i + 1]) for i in range(len(pixels))]).numpy()


def per_layer_sqnr(model, spec, calib: torch.Tensor, pixels: torch.Tensor) -> list[str]:
    """SQNR (dB) of each op's output in the PT2E simulation against fp32, averaged over `pixels` (errors
    propagate: a layer's figure includes what the layers before it lost)."""
    from torchao.quantization.pt2e import (
        compare_results,
        extract_results_from_loggers,
        generate_numeric_debug_handle,
        prepare_for_propagation_comparison,
        quantize_pt2e,
    )
    edge = te.EdgeStudent(model, spec, te.resolve_fold(model, None)).eval()  # as export builds it by default
    exported = torch.export.export(edge, (torch.zeros(1, spec.image_size, spec.image_size, 3),))
    generate_numeric_debug_handle(exported)
    reference = prepare_for_propagation_comparison(copy.deepcopy(exported.module()))
    prepared = quantize_pt2e.prepare_pt2e(exported.module(), te._pixel_input_quantizer())
    with torch.no_grad():
        for image in device_pixels(calib, spec):
            prepared(te.nhwc_pixels(image[None]))
        quantised = prepare_for_propagation_comparison(quantize_pt2e.convert_pt2e(prepared))
        for i in range(len(pixels)):
            reference(pixels[i:i + 1])
            quantised(pixels[i:i + 1])
    lines = ["| op (fp32 graph) | SQNR of its int8 output, dB |", "| --- | --- |"]
    for summary in compare_results(extract_results_from_loggers(reference),
                                   extract_results_from_loggers(quantised)).values():
        if "conv2d" in summary.ref_node_name and "dequantize" in summary.actual_node_name:
            continue  # BatchNorm folds into the int8 conv: its fp32 output (before BN) is not comparable
        sqnr = np.mean([float(result.sqnr) for result in summary.results])
        lines.append(f"| {summary.ref_node_name} | {sqnr:.1f} |")
    return lines


def onnx_int8_logits(model, spec, calib: torch.Tensor, images: torch.Tensor, folder: Path) -> np.ndarray:
    from kndnet.deploy.onnx_export import export_onnx
    from kndnet.deploy.quantize import quantize_int8
    from kndnet.inference import OnnxPredictor
    fp32 = export_onnx(model, spec, folder / "fp32.onnx")
    predictor = OnnxPredictor(quantize_int8(fp32, folder / "int8.onnx", calib, spec))
    return predictor.logits(images) * predictor.spec.calibration_temperature


def row(name: str, logits: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> str:
    agree = float((logits.argmax(1) == ref.argmax(1)).mean())
    err = float(np.median(np.abs(logits - ref).max(1)))
    return f"| {name} | {agree:.4f} | {err:.3f} | {CI_METRICS['macro_f1'](labels, logits):.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="checkpoint or kndnet-student")
    parser.add_argument("--data", required=True, help="manifest the model was trained on")
    parser.add_argument("--split", default="val")
    parser.add_argument("--count", type=int, default=0, help="images of the split (0: all)")
    parser.add_argument("--calib-count", type=int, default=200, help="training images to calibrate on")
    parser.add_argument("--per-layer", type=int, default=0, metavar="N", help="also each op's SQNR on N images")
    args = parser.parse_args()
    model, spec = load_model(resolve_model(args.model))
    calib, _ = load_images(args.data, "train", spec, args.calib_count)
    images, labels = load_images(args.data, args.split, spec, args.count)
    # the .tflite graphs leave a colour-constancy layer to the device: feed them white-balanced pixels, as it would
    pixels = te.nhwc_pixels(device_pixels(images, spec))
    with torch.no_grad():
        ref = model(spec.normalise(images)).numpy()
    lines = [f"{len(images)} {args.split} images, calibrated on {len(calib)} training images",
             "| variant | top-1 agreement with fp32 | median max abs logit diff | macro-F1 |",
             "| --- | --- | --- | --- |", row("fp32 PyTorch", ref, ref, labels)]
    with tempfile.TemporaryDirectory() as tmp:
        lines.append(row("int8 weights only (LiteRT, float activations)",
                         weight_only_logits(model, spec, pixels, Path(tmp)), ref, labels))
        lines.append(row("PT2E int8 simulation (PyTorch, before conversion)",
                         simulated_logits(model, spec, calib, pixels), ref, labels))
        te.convert_tflite(model, spec, Path(tmp) / "int8.tflite", calib)
        predictor = TflitePredictor(Path(tmp) / "int8.tflite")
        lines.append(row("full-integer .tflite (LiteRT)",
                         predictor.logits(images) * predictor.spec.calibration_temperature, ref, labels))
        lines.append(row("ONNX Runtime int8 (QDQ, for reference)", onnx_int8_logits(model, spec, calib, images,
                                                                                  Path(tmp)), ref, labels))
    if args.per_layer:
        lines += ["", *per_layer_sqnr(model, spec, calib, pixels[:args.per_layer])]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
