"""`kndnet bench`: latency and throughput of a model as PyTorch eager, ONNX Runtime fp32 and int8, and
with `--tflite` LiteRT (XNNPACK) fp32 and full-integer int8.

Batch-1 latency (p50/p95 over repeated runs after warm-up) and batch-32 throughput, on one thread
and on all cores, all measured in this process on the same inputs. Results are a flat JSON plus a
table; the int8-vs-eager speed-up on one thread is printed as a ratio.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from kndnet.checkpoint import load_model
from kndnet.deploy.graph_stats import graph_stats
from kndnet.deploy.onnx_export import export_onnx
from kndnet.deploy.quantize import quantize_int8
from kndnet.errors import CheckpointError
from kndnet.models import count_parameters


def time_calls(fn: Callable[[], object], warmup: int, repeats: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return times


def _torch_runner(model: torch.nn.Module, x: np.ndarray, threads: int) -> Callable[[], object]:
    tensor = torch.from_numpy(x)
    def run() -> object:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return model(tensor)
    return run


def _ort_runner(path: Path, x: np.ndarray, threads: int) -> Callable[[], object]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})


def _litert_runner(path: Path, x: np.ndarray, threads: int) -> Callable[[], object]:
    """LiteRT (XNNPACK, the default CPU path) on a batch shaped like NCHW `x`; the graph is NHWC and
    batch 1 as converted, resized here for the throughput batch. Values do not change the timing."""
    from kndnet.inference_tflite import require_litert
    interpreter = require_litert("ai_edge_litert.interpreter").Interpreter(model_path=str(path), num_threads=threads)
    detail, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    n, c, h, w = x.shape
    if n != 1:
        interpreter.resize_tensor_input(detail["index"], [n, h, w, c])
    interpreter.allocate_tensors()
    data = np.zeros((n, h, w, c), detail["dtype"])
    def run() -> object:
        interpreter.set_tensor(detail["index"], data)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])
    return run


def measure(runners: dict[str, Callable[[np.ndarray, int], Callable[[], object]]], size: int,
            repeats: int = 50, batch: int = 32) -> dict[str, float]:
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, 3, size, size), dtype=np.float32)
    many = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    all_threads = os.cpu_count() or 1
    out: dict[str, float] = {}
    for name, make in runners.items():
        for label, threads in (("1thread", 1), (f"{all_threads}threads", all_threads)):
            latency = time_calls(make(one, threads), warmup=5, repeats=repeats) * 1000
            out[f"{name}_{label}_b1_p50_ms"] = round(float(np.percentile(latency, 50)), 3)
            out[f"{name}_{label}_b1_p95_ms"] = round(float(np.percentile(latency, 95)), 3)
            seconds = time_calls(make(many, threads), warmup=1, repeats=max(3, repeats // 10))
            out[f"{name}_{label}_b{batch}_img_per_s"] = round(batch / float(np.median(seconds)), 1)
    torch.set_num_threads(all_threads)
    return out


def bench_checkpoint(ckpt: Path, out_dir: Path, calibration: torch.Tensor | None = None,
                     repeats: int = 50, tflite: bool = False, exported: Path | None = None) -> dict[str, Any]:
    """Measure every runtime of a student: the ONNX files of `exported` (a `kndnet export` folder: the
    files that ship) when given, else a fresh export (fp32 + int8) into out_dir; with `tflite` also
    LiteRT fp32 + int8."""
    model, spec = load_model(ckpt)
    random_calibration = calibration is None
    if random_calibration:  # latency does not depend on calibration quality
        calibration = torch.randint(0, 256, (32, 3, spec.image_size, spec.image_size), dtype=torch.uint8)
    fp32, int8 = _onnx_files(model, spec, out_dir, calibration, exported)
    runners = {"torch_eager": lambda x, t: _torch_runner(model, x, t),
               "ort_fp32": lambda x, t: _ort_runner(fp32, x, t),
               "ort_int8": lambda x, t: _ort_runner(int8, x, t)}
    sizes = {"fp32_onnx_bytes": fp32.stat().st_size, "int8_onnx_bytes": int8.stat().st_size}
    if tflite:
        runners.update(_litert_runners(model, spec, out_dir, calibration, sizes))
    stats = graph_stats(fp32, spec.image_size)
    result = {"model": str(ckpt), "arch": spec.arch, "image_size": spec.image_size,
              "parameters": count_parameters(model), "macs": stats["macs"], **sizes,
              **measure(runners, spec.image_size, repeats)}
    result["onnx_files"] = "exported" if exported else "re-exported, random calibration" if random_calibration \
        else "re-exported"
    result["int8_vs_eager_1thread_b1_speedup"] = round(
        result["torch_eager_1thread_b1_p50_ms"] / result["ort_int8_1thread_b1_p50_ms"], 2)
    return result


def _onnx_files(model: torch.nn.Module, spec, out_dir: Path, calibration: torch.Tensor,
                exported: Path | None) -> tuple[Path, Path]:
    """(fp32, int8) ONNX files: the export's own, or exported and quantised here."""
    if exported is not None:
        files = exported / "model_fp32.onnx", exported / "model_int8.onnx"
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{exported}: no {' or '.join(missing)}; run `kndnet export --int8` into it first")
        return files
    fp32 = export_onnx(model, spec, out_dir / f"{spec.arch}_fp32.onnx")
    return fp32, quantize_int8(fp32, out_dir / f"{spec.arch}_int8.onnx", calibration, spec)


def _litert_runners(model: torch.nn.Module, spec, out_dir: Path, calibration: torch.Tensor,
                    sizes: dict[str, int]) -> dict[str, Callable[[np.ndarray, int], Callable[[], object]]]:
    """Convert LiteRT fp32 and full-integer int8 files into out_dir (sizes noted) and their runners."""
    from kndnet.deploy.tflite_export import convert_tflite
    fp32 = convert_tflite(model, spec, out_dir / f"{spec.arch}_fp32.tflite")
    int8 = convert_tflite(model, spec, out_dir / f"{spec.arch}_int8.tflite", calibration)
    sizes.update(fp32_tflite_bytes=fp32.stat().st_size, int8_tflite_bytes=int8.stat().st_size)
    return {"litert_fp32": lambda x, t: _litert_runner(fp32, x, t),
            "litert_int8": lambda x, t: _litert_runner(int8, x, t)}


NOISE_LIMIT = 2.0  # p95/p50 above this: the machine was busy and medians are not comparable


def noisy_timings(result: dict[str, Any]) -> list[str]:
    """'name p95/p50 ratio' for each batch-1 latency whose spread says the machine was busy.

    Why: on a shared machine one runtime's median can land in a busy spell and another's not; a
    speed-up computed from such timings is noise, and must not be printed as a headline.
    """
    noisy = []
    for key, p50 in result.items():
        if key.endswith("_b1_p50_ms") and p50:
            ratio = result[key.replace("_p50_", "_p95_")] / p50
            if ratio > NOISE_LIMIT:
                noisy.append(f"{key.removesuffix('_b1_p50_ms')} p95/p50 {ratio:.1f}")
    return noisy


def speedup_line(result: dict[str, Any]) -> str:
    """The headline int8-vs-eager speed-up, or a warning in its place when the timings are noisy."""
    noisy = noisy_timings(result)
    if noisy:
        return (f"warning: timings are noisy ({'; '.join(noisy)}; over {NOISE_LIMIT:.0f} means a busy machine), so "
                "no speed-up is claimed; rerun `kndnet bench` when the machine is idle")
    return (f"ONNX Runtime int8 vs PyTorch eager, batch 1, one thread: "
            f"{result['int8_vs_eager_1thread_b1_speedup']}x faster")


def bench_table(results: list[dict[str, Any]]) -> str:
    """A readable table: one column per model, one row per measurement."""
    keys = [k for k in results[0] if k not in {"model"}]
    header = "| measurement | " + " | ".join(r["arch"] for r in results) + " |"
    lines = [header, "|" + " --- |" * (len(results) + 1)]
    lines += [f"| {k} | " + " | ".join(str(r.get(k, "")) for r in results) + " |" for k in keys]
    return "\n".join(lines)


__all__ = ["bench_checkpoint", "bench_table", "measure", "noisy_timings", "speedup_line", "time_calls"]
