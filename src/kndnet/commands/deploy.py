"""Deployment commands: explain, predict, export, bench."""

from __future__ import annotations

import argparse
from pathlib import Path

from kndnet.commands import command


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
    p.add_argument("--model", help="checkpoint or .onnx (default: the shipped student)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--tta", default="none", choices=["none", "hflip", "flips"])
    p.add_argument("--explain", metavar="DIR", help="also write Grad-CAM overlays into DIR")


@command("predict", "classify images (top-k with names and probabilities)", _predict_args)
def _predict(args: argparse.Namespace) -> int:
    from kndnet.predict import collect_files, explain_files, format_results, predict_files
    files = collect_files(args.images)
    results = predict_files(files, args.model, args.tta)
    print(format_results(results, args.top_k, args.format))
    if args.explain:
        explain_files([r.path for r in results if not r.error], args.model, Path(args.explain))
    return 1 if any(r.error for r in results) else 0
