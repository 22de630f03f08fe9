"""The stages of `kndnet run`, each a function (configs, run dir, state, log) -> result.

Every stage either finds its output complete and skips, or produces it atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from kndnet.config import Config
from kndnet.data.manifest import MANIFEST_NAME, describe, load_manifest, prepare
from kndnet.io import atomic_write_json, atomic_write_text, is_complete

Configs = dict[str, Config]


def _prepare(configs: Configs, out: Path, state: dict, log: Callable) -> Path:
    path = out / MANIFEST_NAME
    if path.is_file():
        log(f"skipped: {path} exists (a finished prepare; delete it to re-read the data)")
    else:
        prepare(configs["student"].data, out)
    log(describe(load_manifest(path)))
    for cfg in configs.values():
        cfg.data.path = str(path)
        cfg.data.cache_dir = cfg.data.cache_dir or str(out / "cache")
    return path


def _train(role: str) -> Callable:
    def stage(configs: Configs, out: Path, state: dict, log: Callable) -> dict:
        from kndnet.training.fit import fit
        cfg = configs[role]
        if role == "distill":
            cfg.distill.teacher = state["teacher"]["best_checkpoint"]
            cfg.distill.teacher_cache = str(state["teacher_cache"] or "")
            cfg.train.init_from = cfg.train.init_from or state["student"]["best_checkpoint"]
        if (out / role / "summary.json").is_file():
            log(f"skipped: {out / role / 'summary.json'} exists (a finished run)")
        elif (out / role / "checkpoints" / "last.ckpt").is_file():
            log(f"resuming the interrupted run from {out / role / 'checkpoints' / 'last.ckpt'}")
        summary = fit(cfg, out / role)
        log(f"{role}: best val macro-F1 {summary['best_val_macro_f1']} ({summary['epochs_run']} epochs)")
        return summary
    return stage


def _cache_teacher(configs: Configs, out: Path, state: dict, log: Callable) -> Path | None:
    from kndnet.distill.build import cache_teacher_for_config
    from kndnet.distill.teacher_cache import INDEX_NAME
    cfg = configs["distill"]
    cfg.distill.teacher = state["teacher"]["best_checkpoint"]
    if cfg.distill.views == 0:
        log("no teacher cache: the teacher runs online (distill.views is 0)")
        return None
    if (out / "teacher_cache" / INDEX_NAME).is_file():
        log(f"skipped: {out / 'teacher_cache' / INDEX_NAME} exists (written after the last view)")
    else:
        cache_teacher_for_config(cfg, out / "teacher_cache")
    return out / "teacher_cache"


def _evaluate(configs: Configs, out: Path, state: dict, log: Callable) -> dict:
    from kndnet.evaluation.report import write_evaluation
    from kndnet.evaluation.run import evaluation_rows, score
    from kndnet.inference import open_predictor
    rows = evaluation_rows(str(out / MANIFEST_NAME), "test")
    results = {}
    for role in ("teacher", "student", "distill"):
        target = out / "eval" / role
        if is_complete(target):
            log(f"skipped {role}: {target} is complete")
        else:
            predictor = open_predictor(state[role]["best_checkpoint"])
            tta_mode = "hflip" if role == "distill" else "none"
            plain, tta = score(predictor, rows, tta_mode)
            write_evaluation(predictor, plain, target, str(out / MANIFEST_NAME), "test", tta, tta_mode)
        results[role] = json.loads((target / "metrics.json").read_text())
        log(f"{role}: test accuracy {results[role]['accuracy']:.3f}, macro-F1 {results[role]['macro_f1']:.3f}")
    return results


def _export(configs: Configs, out: Path, state: dict, log: Callable) -> dict:
    from kndnet.deploy.export import export
    if is_complete(out / "export"):
        log(f"skipped: {out / 'export'} is complete")
    else:
        export(Path(state["distill"]["best_checkpoint"]), out / "export", True, str(out / MANIFEST_NAME))
    card = json.loads((out / "export" / "export.json").read_text())
    log(f"int8: {card['int8_bytes'] / 1024:.0f} KB, accuracy {card['int8_accuracy']:.3f} "
        f"(fp32 {card['fp32_accuracy']:.3f})")
    return card


def _bench(configs: Configs, out: Path, state: dict, log: Callable) -> dict:
    from kndnet.deploy.bench import bench_checkpoint, noisy_timings, speedup_line
    path = out / "bench" / "bench.json"
    if path.is_file():
        log(f"skipped: {path} exists (written after the measurements)")
    else:
        atomic_write_json(path, bench_checkpoint(Path(state["distill"]["best_checkpoint"]), out / "bench",
                                                 repeats=20))
    result = json.loads(path.read_text())
    log(f"batch-1, 1 thread: eager {result['torch_eager_1thread_b1_p50_ms']} ms, ORT int8 "
        f"{result['ort_int8_1thread_b1_p50_ms']} ms")
    if noisy_timings(result):
        log(speedup_line(result))
    return result


def _report(configs: Configs, out: Path, state: dict, log: Callable) -> dict:
    from kndnet.evaluation.compare import compare
    table = compare([out / "eval" / r for r in ("teacher", "student", "distill")], out,
                    ["teacher", "student alone", "student + KD"], baseline=1)
    ev, card, bench = state["evaluate"], state["export"], state["bench"]
    kd = ev["distill"]
    summary = {"teacher_test": {k: ev["teacher"][k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
               "student_test": {k: ev["student"][k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
               "kd_test": {k: kd[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "tta_macro_f1")},
               "int8": {k: card[k] for k in ("int8_bytes", "int8_accuracy", "int8_macro_f1")},
               "latency_ms_1thread_b1": {k: bench[f"{k}_1thread_b1_p50_ms"]
                                         for k in ("torch_eager", "ort_fp32", "ort_int8")}}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", _report_text(table, kd, card, bench))
    log(f"wrote {out / 'report.md'}")
    return summary


def _report_text(table: str, kd: dict, card: dict, bench: dict) -> str:
    return "\n".join([
        "# KNDNet run report", "", "Held-out, lesion-grouped test split; 95% bootstrap CIs in brackets.", "",
        table, "", f"Student + KD with horizontal-flip TTA: macro-F1 {kd['tta_macro_f1']:.3f}.", "",
        "## Deployment", "",
        f"- parameters {card['parameters']:,}, {card['macs'] / 1e6:.1f} M MACs at {card['image_size']} px",
        f"- int8 ONNX {card['int8_bytes'] / 1024:.0f} KB: accuracy {card['int8_accuracy']:.3f} vs fp32 "
        f"{card['fp32_accuracy']:.3f}, top-1 agreement {card['int8_vs_fp32_top1_agreement']:.3f}",
        f"- int8 peak activation memory {card['peak_activation_bytes_int8'] / 1024:.0f} KB",
        f"- batch-1 latency, one thread: PyTorch eager {bench['torch_eager_1thread_b1_p50_ms']} ms, ONNX Runtime "
        f"fp32 {bench['ort_fp32_1thread_b1_p50_ms']} ms, int8 {bench['ort_int8_1thread_b1_p50_ms']} ms", "",
        "![comparison](comparison.png) ![KD confusion matrix](eval/distill/confusion_matrix.png)", "",
        "Research use only: not a medical device.", ""])


STAGES: list[tuple[str, Callable[[Configs, Path, dict, Callable], Any]]] = [
    ("prepare", _prepare), ("teacher", _train("teacher")), ("teacher_cache", _cache_teacher),
    ("student", _train("student")), ("distill", _train("distill")), ("evaluate", _evaluate),
    ("export", _export), ("bench", _bench), ("report", _report),
]
