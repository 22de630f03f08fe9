"""Fidelity and speed of a trained teacher's int8 copy: top-1 agreement and probability distance to its fp32 self,
for min/max and percentile activation ranges, on training images held back from calibration, and images per
second against fp32 (batch 32, this machine's threads).

Why: `distill.teacher_int8` makes the online teacher about 2x faster on a VNNI CPU, but a teacher whose int8
copy calls other classes teaches something else. `distill.teacher_int8` builds the percentile row first and,
if that copy fails its check, the min/max row (also the student's export recipe). Usage:
    python benchmarks/bench_teacher_int8.py TEACHER.ckpt --data MANIFEST_OR_FOLDER [--images 128] [--check 384]
The defaults are the images `distill.teacher_int8` calibrates and checks on (distill/onnx_teacher.py). As there,
the weights are 7-bit on x86 CPUs without VNNI (kndnet.cpu) and the int8 copies run ONNX Runtime's fused kernels.
The last row stores u8 weights (U8U8), the other way round the saturation of such CPUs, for comparison.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.special import softmax

from kndnet.checkpoint import load_config_from_checkpoint, load_model
from kndnet.cpu import has_int8_dot_product
from kndnet.deploy.export import load_images
from kndnet.deploy.onnx_export import export_onnx, logits_parity
from kndnet.deploy.quantize import CALIBRATION_METHODS, quantize_int8
from kndnet.distill.onnx_teacher import INT8_CALIBRATION_IMAGES, INT8_CHECK_IMAGES, quantise_teacher
from kndnet.inference import OnnxPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("--data", required=True, help="the teacher's manifest, or its data folder")
    parser.add_argument("--images", type=int, default=INT8_CALIBRATION_IMAGES, help="calibration images")
    parser.add_argument("--check", type=int, default=INT8_CHECK_IMAGES, help="other training images to check on")
    args = parser.parse_args()
    model, spec = load_model(args.teacher)
    data_cfg = load_config_from_checkpoint(args.teacher).data
    images, _ = load_images(args.data, "train", spec, args.images + args.check, seed=0, data_cfg=data_cfg)
    calibration, check = images[:args.images], images[args.images:]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, spec, Path(tmp) / "fp32.onnx")
        reference, fp32_speed = timed_logits(OnnxPredictor(fp32), check)
        seven_bit = not has_int8_dot_product()
        print(f"{args.teacher}: {len(calibration)} calibration and {len(check)} check images of the training split; "
              f"{7 if seven_bit else 8}-bit weights (this CPU {'lacks' if seven_bit else 'has'} VNNI); "
              f"fp32 {fp32_speed:.0f} images/s")
        copies = {method: lambda path, m=method: quantise_teacher(fp32, path, calibration, spec, m)
                  for method in CALIBRATION_METHODS}
        copies["percentile, u8 weights"] = lambda path: quantize_int8(fp32, path, calibration, spec, "percentile",
                                                                     unsigned_weights=True)
        for name, quantise in copies.items():
            start = time.perf_counter()
            int8_path = quantise(Path(tmp) / "int8.onnx")
            seconds = time.perf_counter() - start
            logits, speed = timed_logits(OnnxPredictor(int8_path, exact_int8=False), check)
            report(name, reference, logits, seconds, speed / fp32_speed)


def timed_logits(predictor: OnnxPredictor, images, batch: int = 32) -> tuple[np.ndarray, float]:
    """The logits of `images`, scored in batches of `batch` after one warm-up batch, and the images per second."""
    predictor.logits(images[:batch])
    start = time.perf_counter()
    logits = np.concatenate([predictor.logits(images[i:i + batch]) for i in range(0, len(images), batch)])
    return logits, len(images) / (time.perf_counter() - start)


def report(name: str, reference: np.ndarray, candidate: np.ndarray, seconds: float, speed_ratio: float) -> None:
    parity = logits_parity(reference, candidate)
    distance = 0.5 * np.abs(softmax(reference, axis=1) - softmax(candidate, axis=1)).sum(axis=1).mean()
    print(f"  {name:22s} top-1 agreement {parity.top1_agreement:.3f}  mean total-variation distance "
          f"{distance:.3f}  max |logit diff| {parity.max_abs_logit_diff:.2f}  {speed_ratio:.2f}x fp32's "
          f"images/s  ({seconds:.0f} s to quantise)")


if __name__ == "__main__":
    main()
