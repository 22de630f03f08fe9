"""Deployment commands: explain, predict, export, bench."""

from __future__ import annotations

import argparse
from pathlib import Path

from kndnet.commands import SPLITS, command, positive_int


def _explain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--model", help="checkpoint (default: the shipped student)")
    p.add_argument("--out", required=True, help="folder for one overlay PNG per image")
    p.add_argument("--target-class", help="explain this class (code or name) instead of the prediction")


@command("explain", "write Grad-CAM overlays showing where the model looked", _explain_args)
def _explain(args: argparse.Namespace) -> int:
    from kndnet.predict import explain_files
    failures = explain_files(args.images, args.model, Path(args.out), args.target_class)
    return 1 if failures else 0


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--model", help="checkpoint, .onnx or .tflite (default: the shipped student)")
    p.add_argument("--top-k", type=int, default=3, help="classes shown per image (1 to 7)")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--tta", default="none", choices=["none", "hflip", "flips"])
    p.add_argument("--explain", metavar="DIR", help="also write Grad-CAM overlays into DIR")


@command("predict", "classify images (top-k with names and probabilities)", _predict_args)
def _predict(args: argparse.Namespace) -> int:
    from kndnet.io import check_output_folder
    from kndnet.predict import check_top_k, collect_files, explain_files, format_results, predict_files
    check_top_k(args.top_k)
    if args.explain:
        check_output_folder(args.explain, "--explain")
    files = collect_files(args.images)
    results = predict_files(files, args.model, args.tta)
    print(format_results(results, args.top_k, args.format))
    if args.explain:
        good = [r.path for r in results if not r.error]
        if good:
            explain_files(good, args.model, Path(args.explain))
    return 1 if any(r.error for r in results) else 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint (default: the shipped student)")
    p.add_argument("--out", required=True, help="folder for model_fp32.onnx, model_int8.onnx, model card")
    p.add_argument("--int8", action="store_true", help="also write an int8 (QDQ, per-channel) model")
    p.add_argument("--calib", help="manifest or data folder: calibration images come from its train split")
    p.add_argument("--calib-count", type=positive_int, default=200)
    p.add_argument("--eval-split", default="test", choices=SPLITS, help="held-out split for the fp32-vs-int8 report")
    p.add_argument("--tflite", action="store_true",
                   help="also write model_int8.tflite (full-integer LiteRT; needs `pip install 'kndnet[litert]'`) "
                        "and measure it in LiteRT and TensorFlow Lite Micro")
    p.add_argument("--c-array", action="store_true",
                   help="also write model_data.h/.cc and main.cc: the .tflite model for TFLite Micro firmware")
    p.add_argument("--fold-input", action=argparse.BooleanOptionalAction, default=None,
                   help="LiteRT: fold the input's 1/std into the student's stem conv instead of a MUL (default: "
                        "on for the kndnet student; validation agreement with fp32 0.985 -> 0.993 for runs/v32's "
                        "KD student)")
    p.add_argument("--image-size", type=positive_int, default=0,
                   help="export at this input size instead of the trained one (the student is fully convolutional)")


@command("export", "export ONNX (and int8, LiteRT) with parity checks and a model card", _export_args)
def _export(args: argparse.Namespace) -> int:
    from kndnet.deploy.export import LiteRTOptions, export
    from kndnet.deploy.model_card import export_summary
    from kndnet.shipped import resolve_model
    card = export(resolve_model(args.model), Path(args.out), args.int8, args.calib, args.calib_count,
                  args.eval_split, litert=LiteRTOptions(args.tflite, args.c_array, args.image_size, args.fold_input),
                  command=args.command_line)
    print("\n".join(export_summary(card)))
    print(f"wrote {args.out}/MODEL_CARD.md")
    return 0


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="student checkpoint (default: the shipped student)")
    p.add_argument("--teacher", help="teacher checkpoint, measured side by side")
    p.add_argument("--calib", help="manifest or data folder for int8 calibration (default: random images)")
    p.add_argument("--repeats", type=positive_int, default=50)
    p.add_argument("--export", type=Path, help="a `kndnet export --int8` folder of --model: time its ONNX files "
                   "(what ships) instead of exporting and quantising again")
    p.add_argument("--tflite", action="store_true",
                   help="also LiteRT (XNNPACK) fp32 and full-integer int8 (needs `pip install 'kndnet[litert]'`)")
    p.add_argument("--out", required=True)


@command("bench", "latency/throughput: PyTorch eager vs ONNX Runtime (and LiteRT) fp32 vs int8, 1 and all threads",
         _bench_args)
def _bench(args: argparse.Namespace) -> int:
    from kndnet.deploy.bench import bench_checkpoint, bench_table, speedup_line
    from kndnet.io import atomic_write_json, atomic_write_text
    from kndnet.shipped import resolve_model
    out = Path(args.out)
    if args.tflite:
        from kndnet.inference_tflite import check_litert_installed
        check_litert_installed()
    models = [resolve_model(args.model)] + ([Path(args.teacher)] if args.teacher else [])
    # LiteRT and the export folder for the student only: the teacher is not a deployment target
    results = [bench_checkpoint(m, out, _calibration(args.calib, m), args.repeats, args.tflite and i == 0,
                                args.export if i == 0 else None) for i, m in enumerate(models)]
    table = bench_table(results)
    atomic_write_json(out / "bench.json", results)
    atomic_write_text(out / "bench.md", table + "\n")
    print(table)
    print(speedup_line(results[0]))
    return 0


def _calibration(data: str | None, model: Path):
    if not data:
        return None
    from kndnet.checkpoint import load_config_from_checkpoint, load_model
    from kndnet.deploy.export import load_images
    _, spec = load_model(model)
    return load_images(data, "train", spec, 64, data_cfg=load_config_from_checkpoint(model).data)[0]
