"""Runtime x precision for the deployed student: file size, batch-1 latency (one thread), test-split
top-1 agreement with fp32 PyTorch, all measured in one process on the same images.

Rows: PyTorch eager fp32, ONNX Runtime fp32 and int8 (QDQ), LiteRT (XNNPACK) fp32 and full-integer int8.
It reads an export folder written by `kndnet export --int8 --tflite` (model.ckpt, model_fp32.onnx,
model_int8.onnx, model_int8.tflite) and converts the LiteRT fp32 file itself (or takes --tflite-fp32).
Latency: p50 (and p95) of batch-1 calls after warm-up, rounds alternating between runtimes so a busy
spell hits them all.
Usage: python benchmarks/bench_runtimes.py EXPORT_DIR [--data ../shared/data/ham10000] [--repeats 200]
       [--tflite-fp32 FILE]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import data_arg

from kndnet.checkpoint import load_config_from_checkpoint, load_model
from kndnet.deploy.bench import _litert_runner, _ort_runner, _torch_runner, time_calls
from kndnet.deploy.export import load_images
from kndnet.deploy.tflite_export import convert_tflite
from kndnet.inference import OnnxPredictor, TorchPredictor
from kndnet.inference_tflite import TflitePredictor

ROUNDS = 5


def rows(export: Path, tflite_fp32: Path) -> dict[str, tuple[Path, object, object]]:
    """name -> (file, predictor, latency runner maker)."""
    model, _ = load_model(export / "model.ckpt")
    ckpt, onnx32, onnx8, lite8 = (export / n for n in ("model.ckpt", "model_fp32.onnx", "model_int8.onnx",
                                                         "model_int8.tflite"))
    return {"PyTorch eager fp32": (ckpt, TorchPredictor(ckpt), lambda x: _torch_runner(model, x, 1)),
            "ONNX Runtime fp32": (onnx32, OnnxPredictor(onnx32), lambda x: _ort_runner(onnx32, x, 1)),
            "ONNX Runtime int8": (onnx8, OnnxPredictor(onnx8), lambda x: _ort_runner(onnx8, x, 1)),
            "LiteRT fp32": (tflite_fp32, TflitePredictor(tflite_fp32), lambda x: _litert_runner(tflite_fp32, x, 1)),
            "LiteRT int8": (lite8, TflitePredictor(lite8), lambda x: _litert_runner(lite8, x, 1))}


def latencies(table: dict, size: int, repeats: int) -> dict[str, np.ndarray]:
    """Batch-1, one-thread call times in ms, ROUNDS alternating rounds of repeats/ROUNDS calls each."""
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    runners = {name: make(x) for name, (_, _, make) in table.items()}
    times: dict[str, list[np.ndarray]] = {name: [] for name in runners}
    for _ in range(ROUNDS):
        for name, run in runners.items():
            times[name].append(time_calls(run, warmup=5, repeats=max(1, repeats // ROUNDS)) * 1000)
    return {name: np.concatenate(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    data_arg(parser)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--tflite-fp32", type=Path, help="a LiteRT fp32 file of the same model (else converted)")
    args = parser.parse_args()
    model, spec = load_model(args.export / "model.ckpt")
    data_cfg = load_config_from_checkpoint(args.export / "model.ckpt").data
    images, _ = load_images(args.data, "test", spec, 0, data_cfg=data_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        tflite_fp32 = args.tflite_fp32 or convert_tflite(model, spec, Path(tmp) / "model_fp32.tflite")
        table = rows(args.export, tflite_fp32)
        reference = table["PyTorch eager fp32"][1].logits(images).argmax(1)
        agreement = {name: float(np.mean(p.logits(images).argmax(1) == reference)) for name, (_, p, _) in table.items()}
        sizes = {name: path.stat().st_size for name, (path, _, _) in table.items()}
        ms = latencies(table, spec.image_size, args.repeats)
    fastest = min(float(np.median(t)) for t in ms.values())
    print(f"{spec.image_size} px, {len(images)} test images, batch 1, one thread, {args.repeats} calls each")
    print("| runtime | precision | file | batch-1 latency p50 (p95) | vs fastest | test-split agreement with fp32 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, t in ms.items():
        runtime, precision = name.rsplit(" ", 1)
        p50, p95 = float(np.median(t)), float(np.percentile(t, 95))
        print(f"| {runtime} | {precision} | {sizes[name] / 1024:.1f} KB | {p50:.3f} ms ({p95:.3f}) | "
              f"{p50 / fastest:.2f}x | {agreement[name]:.3f} |")


if __name__ == "__main__":
    main()
