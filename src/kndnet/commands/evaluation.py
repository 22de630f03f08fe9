"""Evaluation commands: evaluate, calibrate, compare, explain."""

from __future__ import annotations

import argparse
from pathlib import Path

from kndnet.commands import SPLITS, command, non_negative_float, positive_int
from kndnet.commands.data import data_args
from kndnet.errors import DataError

ADJUST_METRICS = ("macro_f1", "balanced_accuracy", "accuracy")  # evaluation.logit_adjustment's (lazy import)


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
    p.add_argument("--model", nargs="+", help="checkpoint, .onnx or .tflite (default: the shipped student); "
                   "several: score their logit-averaging ensemble (same input size and normalisation)")
    p.add_argument("--split", default="test", choices=SPLITS, help="manifest split (default test)")
    p.add_argument("--tta", default="none", choices=["none", "hflip", "flips"])
    p.add_argument("--out", required=True, help="folder for metrics.json, predictions.csv, figures, report.md")
    p.add_argument("--resamples", type=positive_int, default=1000, help="bootstrap resamples for the 95%% CIs")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--colour-cast", type=non_negative_float, default=0.0, metavar="SIGMA",
                   help="robustness check: score each image under its own simulated colour cast, RGB gains "
                        "exp(SIGMA * N(0,1)) (0.1 mild, 0.3 strong; the same per image for every model)")


@command("evaluate", "score a model with CIs, calibration, per-class metrics and figures", _evaluate_args)
def _evaluate(args: argparse.Namespace) -> int:
    from kndnet.evaluation.metrics import with_ci
    from kndnet.evaluation.report import write_evaluation
    from kndnet.evaluation.run import evaluation_rows, score
    from kndnet.inference import open_predictors
    from kndnet.shipped import resolve_model
    predictor = open_predictors([resolve_model(m) for m in args.model or [None]])
    rows = evaluation_rows(args.data, args.split, args.format or "auto")
    plain, tta = score(predictor, rows, args.tta, args.batch_size, cast_sigma=args.colour_cast)
    m = write_evaluation(predictor, plain, Path(args.out), args.data, args.split, tta, args.tta, args.resamples,
                         args.colour_cast)
    print(f"{m['images']} images: accuracy {with_ci(m, 'accuracy')}, balanced accuracy "
          f"{m['balanced_accuracy']:.3f}, macro-F1 {with_ci(m, 'macro_f1')}, ECE {m['ece']:.3f}")
    if tta is not None:
        print(f"with TTA ({args.tta}): accuracy {m['tta_accuracy']:.3f}, macro-F1 {m['tta_macro_f1']:.3f}")
    print(f"wrote {args.out}/report.md")
    return 0


def _calibrate_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
    p.add_argument("--model", required=True, help="checkpoint to calibrate")
    p.add_argument("--split", default="val", choices=SPLITS, help="split to fit the temperature on (default val)")
    p.add_argument("--out", help="calibrated checkpoint (default: <model>_calibrated.ckpt)")
    p.add_argument("--logit-adjust", nargs="?", const="macro_f1", choices=ADJUST_METRICS, metavar="METRIC",
                   help="also add tau * log(training class prior) to the logits (Menon et al. 2021), tau chosen "
                        "in -1 ... 1 on the split to maximise METRIC (default macro_f1; or balanced_accuracy, "
                        "accuracy), and "
                        "folded into the classifier bias; trades rare-class recall (melanoma too) for precision")


@command("calibrate", "fit temperature scaling on the validation split and store it in the checkpoint",
         _calibrate_args)
def _calibrate(args: argparse.Namespace) -> int:
    from kndnet.evaluation.calibration import calibrate_checkpoint
    out, s, n = calibrate_checkpoint(args.model, args.data, args.split, args.format or "auto", args.out,
                                     args.logit_adjust)
    if args.logit_adjust:
        metric = args.logit_adjust
        print(f"logit adjustment tau {s['prior_tau']:.2f}: {args.split} {metric} {s[metric + '_before']:.3f} -> "
              f"{s[metric + '_after']:.3f}, melanoma sensitivity {s['melanoma_sensitivity_before']:.3f} -> "
              f"{s['melanoma_sensitivity_after']:.3f}")
    print(f"calibration temperature {s['calibration_temperature']}: ECE {s['ece_before']} -> {s['ece_after']} on {n} "
          f"{args.split} images; wrote {out}")
    return 0


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("evaluations", nargs="+", metavar="EVAL_DIR[,EVAL_DIR...]",
                   help="folders written by `kndnet evaluate` (same split), e.g. teacher, student, KD; join one "
                        "model's training seeds with commas (alone_s0,alone_s1) to compare seed means, bootstrapped "
                        "over seeds and images")
    p.add_argument("--names", help="comma-separated labels, one per model (per EVAL_DIR argument)")
    p.add_argument("--baseline", type=int, default=0,
                   help="index of the model the others are differenced against (default 0, the first)")
    p.add_argument("--folds", action="store_true",
                   help="the folders are K folds of one model: write mean +- std per metric (cv.md)")
    p.add_argument("--out", required=True)


def _seed_folders(arg: str) -> list[Path]:
    """One model's evaluations: a folder, or its training seeds' folders joined by commas."""
    if Path(arg).is_dir():
        return [Path(arg)]
    folders = [Path(part.strip()) for part in arg.split(",") if part.strip()]
    if not folders:
        raise DataError(f"{arg!r} names no evaluation folder; give EVAL_DIR or EVAL_DIR,EVAL_DIR,... (one per seed)")
    repeated = sorted({str(f) for f in folders if folders.count(f) > 1})
    if repeated:
        raise DataError(f"{arg!r} gives {', '.join(repeated)} more than once; list each seed's evaluation once")
    return folders


@command("compare", "one Markdown table and one chart of several evaluated models", _compare_args)
def _compare(args: argparse.Namespace) -> int:
    from kndnet.evaluation.compare import compare, write_fold_summary
    if args.folds:
        print(write_fold_summary([Path(e) for e in args.evaluations], Path(args.out)))
        return 0
    names = args.names.split(",") if args.names else None
    if not 0 <= args.baseline < len(args.evaluations):
        raise DataError(f"--baseline {args.baseline}: choose 0 to {len(args.evaluations) - 1}")
    table = compare([_seed_folders(e) for e in args.evaluations], Path(args.out), names, args.baseline)
    print(table)
    return 0
