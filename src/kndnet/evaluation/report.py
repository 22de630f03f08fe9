"""Write an evaluation's files: metrics.json, predictions.csv, figures and a readable report.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kndnet.classes import CLASSES
from kndnet.data.manifest import write_csv_atomic
from kndnet.evaluation.figures import confusion_matrix_png, reliability_png
from kndnet.evaluation.metrics import expected_calibration_error, reliability_bins, with_ci
from kndnet.evaluation.run import Scored, confusion, flat_metrics, predictions_table
from kndnet.inference import Predictor, softmax
from kndnet.io import atomic_write_json, atomic_write_text, staged_folder


def uncalibrated_ece(probs: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    """ECE the model had before temperature scaling: softmax(T * log p) undoes the division by T."""
    return expected_calibration_error(y_true, softmax(np.log(probs + 1e-12) * temperature))


def report_markdown(m: dict, tta: dict | None, title: str) -> str:
    lines = [f"# Evaluation: {title}", "",
             f"Model `{m['model']}` on `{m['data']}` (split `{m['split']}`, {m['images']} images). "
             "95% bootstrap confidence intervals over images in brackets.", "",
             *([f"Each image under a simulated colour cast (`--colour-cast {m['colour_cast']}`: log-normal "
                "channel gains, the same per image for every model).", ""] if m.get("colour_cast") else []),
             "| metric | value |", "| --- | --- |",
             f"| accuracy | {with_ci(m, 'accuracy')} |",
             f"| balanced accuracy (ISIC 2018 score) | {with_ci(m, 'balanced_accuracy')} |",
             f"| macro-F1 | {with_ci(m, 'macro_f1')} |"]
    if tta:
        lines += [f"| macro-F1 with TTA ({m['tta']}) | {with_ci(tta, 'tta_macro_f1')} |",
                  f"| accuracy with TTA | {with_ci(tta, 'tta_accuracy')} |"]
    lines += [f"| macro precision / recall | {m['macro_precision']:.3f} / {m['macro_recall']:.3f} |",
              f"| weighted F1 | {m['weighted_f1']:.3f} |",
              f"| melanoma sensitivity / specificity | {m['melanoma_sensitivity']:.3f} / "
              f"{m['melanoma_specificity']:.3f} |",
              f"| ROC-AUC (macro, one-vs-rest) | {m['roc_auc_macro']:.3f} |",
              f"| ECE (15 bins) / NLL / Brier | {m['ece']:.3f} / {m['nll']:.3f} / {m['brier']:.3f} |",
              *([f"| ECE before temperature scaling (T={m['calibration_temperature']:.2f}) | "
                 f"{m['ece_uncalibrated']:.3f} |"] if "ece_uncalibrated" in m else []),
              "", "## Per class", "", "| class | precision | recall | F1 | ROC-AUC | support |",
              "| --- | --- | --- | --- | --- | --- |"]
    for c in CLASSES:
        lines.append(f"| {c.code} ({c.name}) | {m[c.code + '_precision']:.3f} | {m[c.code + '_recall']:.3f} | "
                     f"{m[c.code + '_f1']:.3f} | {m['roc_auc_' + c.code]:.3f} | {m[c.code + '_support']} |")
    lines += ["", "![confusion matrix](confusion_matrix.png) ![reliability](reliability.png)", "",
              "Research use only: not a medical device.", ""]
    return "\n".join(lines)


def write_evaluation(predictor: Predictor, scored: Scored, out_dir: Path, data: str, split: str,
                     tta_scored: Scored | None = None, tta: str = "none", resamples: int = 1000,
                     cast_sigma: float = 0.0) -> dict:
    out_dir = Path(out_dir)
    metrics = {"model": getattr(predictor, "source", "?"), "data": str(data), "split": split,
               "images": len(scored.y_true), "calibration_temperature": predictor.spec.calibration_temperature,
               "tta": tta, "colour_cast": cast_sigma,
               **flat_metrics(scored, resamples)}
    if predictor.spec.calibration_temperature != 1.0:
        before = uncalibrated_ece(scored.probs, scored.y_true, predictor.spec.calibration_temperature)
        metrics["ece_uncalibrated"] = round(before, 4)
    tta_metrics = flat_metrics(tta_scored, resamples, prefix="tta_") if tta_scored is not None else None
    title = model_title(metrics["model"], predictor.spec.role)
    with staged_folder(out_dir) as tmp:  # all files or none: a killed run never looks finished
        atomic_write_json(tmp / "metrics.json", {**metrics, **(tta_metrics or {})})
        write_csv_atomic(predictions_table(scored), tmp / "predictions.csv")
        confusion_matrix_png(confusion(scored), tmp / "confusion_matrix.png", title)
        reliability_png(reliability_bins(scored.y_true, scored.probs),
                        expected_calibration_error(scored.y_true, scored.probs), tmp / "reliability.png", title)
        atomic_write_text(tmp / "report.md", report_markdown(metrics, tta_metrics, title))
    return {**metrics, **(tta_metrics or {})}


def model_title(source: str, role: str) -> str:
    """A figure title naming the model: `<run> (<role>)` for a run's checkpoints/best.ckpt, not `best.ckpt`;
    an ensemble (sources joined by ' + ') is named member by member."""
    if " + " in source:
        members = (_run_folder(Path(member)) or Path(member).name for member in source.split(" + "))
        return f"ensemble of {' + '.join(members)} ({role})"
    path = Path(source)
    run = _run_folder(path)
    return f"{run} ({role}, {path.stem})" if run else f"{path.name} ({role})"


def _run_folder(path: Path) -> str:
    """The run folder's name for <run>/checkpoints/<file>; empty for any other path."""
    return path.parent.parent.name if path.parent.name == "checkpoints" else ""


__all__ = ["write_evaluation", "report_markdown", "uncalibrated_ece"]
