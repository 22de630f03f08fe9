"""The stages of `kndnet run`: each fills its own typed field of a `Run`, or finds it done and skips.

Every stage either finds its output complete (`_finished`: its marker is written last) and skips, or
produces it atomically. Stages never mutate the recipe's configs: each training stage gets a copy with
the paths the earlier stages produced.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import yaml

from kndnet.config import Config, ensemble_archs
from kndnet.data.manifest import MANIFEST_NAME, describe, load_manifest, prepare
from kndnet.errors import ConfigError
from kndnet.io import COMPLETE_MARKER, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

Configs = dict[str, Config]
Summary = dict[str, Any]


@dataclass
class Run:
    """A pipeline run: its inputs, and what each stage hands the next (None until that stage ran)."""
    configs: Configs
    out: Path
    log: Callable[[str], None]
    manifest: Path | None = None
    teacher: Summary | None = None          # fit summaries: best_checkpoint, best_val_macro_f1, ...
    ensemble: list[Summary] = field(default_factory=list)  # the teacher's other members (model.ensemble)
    teacher_cache: Path | None = None       # None: the teacher runs online
    student: Summary | None = None
    distill: Summary | None = None
    evaluate: dict[str, Summary] | None = None
    export: Summary | None = None
    bench: Summary | None = None
    report: Summary | None = None
    found_done: list[bool] = field(default_factory=list)  # the current stage's completeness checks (_finished)
    rank: int = 0  # a DDP rank other than 0 only joins the training stages (io.ddp_rank)


def _finished(run: Run, marker: Path, why: str) -> bool:
    """The one completeness check: a stage's marker file is written last, so it means finished."""
    done = marker.is_file()
    run.found_done.append(done)
    if done:
        run.log(f"skipped: {marker} exists ({why})")
    return done


def _stage_config(run: Run, role: str) -> Config:
    """A copy of the role's config reading the run's manifest and cache (the recipe stays as written)."""
    cfg = copy.deepcopy(run.configs[role])
    cfg.data.path = str(run.manifest)
    cfg.data.cache_dir = cfg.data.cache_dir or str(run.out / "cache")
    cfg.model.ensemble = ""  # each training stage trains one model; the ensemble stage trains the others
    if role == "distill":
        cfg.distill.teacher = ",".join(_teacher_checkpoints(run))
        cfg.distill.teacher_cache = str(run.teacher_cache or "")
        if run.student is not None:
            cfg.train.init_from = cfg.train.init_from or run.student["best_checkpoint"]
    return cfg


def _prepare(run: Run) -> None:
    path = run.out / MANIFEST_NAME
    if not _finished(run, path, "a finished prepare; delete it to re-read the data"):
        prepare(run.configs["student"].data, run.out)
    manifest = load_manifest(path)
    run.log(describe(manifest))
    distill = run.configs["distill"]
    if distill.distill.transfer_images:  # checked here, not hours later at the distill stage
        from kndnet.data.transfer import transfer_rows
        rows = transfer_rows(distill.distill.transfer_images, manifest, distill.data.val_fold)
        run.log(f"{len(rows)} transfer images in {distill.distill.transfer_images}, none of them held out")
    run.manifest = path


def _teacher_checkpoints(run: Run) -> list[str]:
    """The teacher's best checkpoint, then each ensemble member's: distillation averages their logits."""
    return [summary["best_checkpoint"] for summary in [run.teacher, *run.ensemble]]


def _fit_stage(run: Run, cfg: Config, folder: Path, name: str) -> Summary:
    from kndnet.training.fit import fit
    if not _finished(run, folder / "summary.json", "a finished run") and \
            (folder / "checkpoints" / "last.ckpt").is_file():
        run.log(f"resuming the interrupted run from {folder / 'checkpoints' / 'last.ckpt'}")
    summary = fit(cfg, folder)
    if not run.rank:  # other ranks get the checkpoint's path only
        run.log(f"{name}: best val macro-F1 {summary['best_val_macro_f1']} ({summary['epochs_run']} epochs)")
    return summary


def _train(role: str) -> Callable[[Run], None]:
    def stage(run: Run) -> None:
        setattr(run, role, _fit_stage(run, _stage_config(run, role), run.out / role, role))
    return stage


def _distill(run: Run) -> None:
    cfg = _stage_config(run, "distill")
    _refuse_other_teachers(cfg, run.out / "distill")
    run.distill = _fit_stage(run, cfg, run.out / "distill", "distill")


def _member_folders(teachers: str) -> list[str]:
    """The run folder of each teacher checkpoint (.../teacher_<arch>/checkpoints/best.ckpt -> teacher_<arch>)."""
    return [Path(path).parent.parent.name for path in teachers.split(",") if path]


def _refuse_other_teachers(cfg: Config, folder: Path) -> None:
    """A distillation run (finished or interrupted) from another set of teachers is not this recipe's.

    Why here: `distill.teacher` is a path, free to change when a run folder moves, so fit's recipe check
    ignores it; the members are compared by their run folder (teacher, teacher_<arch>) instead."""
    saved = folder / "config.yaml"
    if not saved.is_file():
        return
    before = _member_folders(yaml.safe_load(saved.read_text())["distill"]["teacher"])
    now = _member_folders(cfg.distill.teacher)
    if before != now:
        raise ConfigError(f"{folder} distilled from {', '.join(before)}, but the recipe's teacher is now "
                          f"{', '.join(now)} (model.ensemble changed); use a new --out, or delete {folder} "
                          f"and {folder.parent / 'eval'} to distil again")


def _train_ensemble(run: Run) -> None:
    """The teacher's other members (`model.ensemble` of the teacher section): the teacher's recipe, each
    with its own architecture, into teacher_<arch>/. An ensemble of differently built teachers averaged
    by logit is a better teacher than any member (Hinton et al. 2015; runs/v8 and v9: docs/RESULTS.md)."""
    run.ensemble = []
    for arch in ensemble_archs(run.configs["teacher"].model):
        cfg = _stage_config(run, "teacher")
        cfg.model.arch = arch
        run.ensemble.append(_fit_stage(run, cfg, run.out / f"teacher_{arch}", f"teacher {arch}"))


def _cache_teacher(run: Run) -> None:
    from kndnet.distill.build import cache_teacher_for_config
    from kndnet.distill.teacher_cache import INDEX_NAME
    cfg = _stage_config(run, "distill")
    if cfg.distill.views == 0:
        run.log("no teacher cache: the teacher runs online (distill.views is 0)")
        return
    folder = run.out / "teacher_cache"
    if not run.rank and not _finished(run, folder / INDEX_NAME, "written after the last view"):
        cache_teacher_for_config(cfg, folder)  # rank 0 alone; the others meet it at the next training stage
    run.teacher_cache = folder


ROBUSTNESS_CAST = 0.2  # sigma of the simulated colour cast every run's models are also scored under


def _evaluate(run: Run) -> None:
    """Each model on the test split, plainly and under a simulated colour cast (evaluation.colour_cast):
    the cast is the measurable part of a change of dermoscope, where students have lost most (README)."""
    from functools import cache

    from kndnet.evaluation.run import evaluation_rows
    from kndnet.inference import open_predictors
    rows = evaluation_rows(str(run.manifest), "test")
    results = {}
    for role in ("teacher", "student", "distill"):
        paths = _teacher_checkpoints(run) if role == "teacher" else [getattr(run, role)["best_checkpoint"]]
        predictor = cache(lambda paths=paths: open_predictors(paths))  # opened once, only if something is scored
        for cast, name in ((0.0, role), (ROBUSTNESS_CAST, f"{role}_cast")):
            results[name] = _evaluate_role(run, predictor, role, rows, cast, run.out / "eval" / name)
        plain, cast = results[role], results[f"{role}_cast"]
        run.log(f"{role}: test accuracy {plain['accuracy']:.3f}, macro-F1 {plain['macro_f1']:.3f}; "
                f"under a colour cast macro-F1 {cast['macro_f1']:.3f}")
    run.evaluate = results


def _evaluate_role(run: Run, predictor: Callable[[], Any], role: str, rows: pd.DataFrame, cast: float,
                   target: Path) -> dict:
    """One model's evaluation in `target` (colour cast `cast`, 0 for none), reused when a resumed run finds it
    finished at the same cast. `predictor()` gives the model (the teacher's row: the ensemble, if there is one)."""
    from kndnet.evaluation.report import write_evaluation
    from kndnet.evaluation.run import score
    marker, metrics = target / COMPLETE_MARKER, target / "metrics.json"
    found = json.loads(metrics.read_text()) if marker.is_file() else None  # read once, checked, then returned
    if found is not None and found.get("colour_cast", 0.0) != cast:
        run.log(f"{target.name} was scored at another colour cast: scoring it again at {cast}")
        run.found_done.append(False)  # the stage does work: its time is compute, not a skip
    elif _finished(run, marker, f"{target.name} evaluated"):
        return found
    tta_mode = "hflip" if role == "distill" and not cast else "none"
    plain, tta = score(predictor(), rows, tta_mode, cast_sigma=cast)
    write_evaluation(predictor(), plain, target, str(run.manifest), "test", tta, tta_mode, cast_sigma=cast)
    return json.loads(metrics.read_text())  # as a resumed run reads it


def _export(run: Run) -> None:
    from kndnet.deploy.export import export
    folder = run.out / "export"
    if not _finished(run, folder / COMPLETE_MARKER, "a finished export"):
        export(Path(run.distill["best_checkpoint"]), folder, True, str(run.manifest))
    card = json.loads((folder / "export.json").read_text())
    run.log(f"int8: {card['int8_bytes'] / 1024:.0f} KB, accuracy {card['int8_accuracy']:.3f} "
            f"(fp32 {card['fp32_accuracy']:.3f})")
    run.export = card


def _bench(run: Run) -> None:
    from kndnet.deploy.bench import bench_checkpoint, noisy_timings, speedup_line
    path = run.out / "bench" / "bench.json"
    if not _finished(run, path, "written after the measurements"):
        atomic_write_json(path, bench_checkpoint(Path(run.distill["best_checkpoint"]), run.out / "bench",
                                                 repeats=20, exported=run.out / "export"))  # what ships
    result = json.loads(path.read_text())
    run.log(f"batch-1, 1 thread: eager {result['torch_eager_1thread_b1_p50_ms']} ms, ORT int8 "
            f"{result['ort_int8_1thread_b1_p50_ms']} ms")
    if noisy_timings(result):
        run.log(speedup_line(result))
    run.bench = result


def _report(run: Run) -> None:
    from kndnet.evaluation.compare import compare
    from kndnet.stage_times import compute_section, run_compute
    out = run.out
    teacher = f"teacher (mean of {1 + len(run.ensemble)})" if run.ensemble else "teacher"
    names = [teacher, "student alone", "student + KD"]
    table = compare([out / "eval" / r for r in ("teacher", "student", "distill")], out, names, baseline=1)
    ev, card, bench = run.evaluate, run.export, run.bench
    cast_table = _cast_table(names, [(ev[r], ev[f"{r}_cast"]) for r in ("teacher", "student", "distill")])
    kd = ev["distill"]
    decisions = ("accuracy", "balanced_accuracy", "macro_f1")
    summary = {"teacher_test": {k: ev["teacher"][k] for k in decisions},
               "student_test": {k: ev["student"][k] for k in decisions},
               "kd_test": {k: kd[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "tta_macro_f1")},
               "colour_cast_test": {"sigma": ROBUSTNESS_CAST,
                                    **{name: {k: ev[f"{role}_cast"][k] for k in decisions}
                                       for name, role in (("teacher", "teacher"), ("student", "student"),
                                                          ("kd", "distill"))}},
               "int8": {k: card[k] for k in ("int8_bytes", "int8_accuracy", "int8_macro_f1")},
               "latency_ms_1thread_b1": {k: bench[f"{k}_1thread_b1_p50_ms"]
                                         for k in ("torch_eager", "ort_fp32", "ort_int8")},
               "compute": run_compute(out)}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", _report_text(table, cast_table, kd, card, bench,
                                                      compute_section(summary["compute"])))
    run.log(f"wrote {out / 'report.md'}")
    run.report = summary


def _cast_table(names: list[str], pairs: list[tuple[dict, dict]]) -> str:
    """Each model under the cast beside its plain macro-F1: a table from the evaluations' own CIs (a paired
    bootstrap per model, as `compare` does, would double the pipeline's evaluation time)."""
    from kndnet.evaluation.metrics import with_ci
    lines = ["| model | accuracy | balanced accuracy | macro-F1 | plain macro-F1 |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {with_ci(cast, 'accuracy')} | {with_ci(cast, 'balanced_accuracy')} | "
              f"{with_ci(cast, 'macro_f1')} | {plain['macro_f1']:.3f} |" for name, (plain, cast) in zip(names, pairs)]
    return "\n".join(lines)


def _report_text(table: str, cast_table: str, kd: dict, card: dict, bench: dict, compute: list[str]) -> str:
    return "\n".join([
        "# KNDNet run report", "", "Held-out, lesion-grouped test split; 95% bootstrap CIs in brackets.", "",
        table, "", f"Student + KD with horizontal-flip TTA: macro-F1 {kd['tta_macro_f1']:.3f}.", "",
        "## Under a simulated colour cast", "",
        f"The same images, each under its own white-balance change (`kndnet evaluate --colour-cast "
        f"{ROBUSTNESS_CAST}`): a stand-in for another dermoscope.", "", cast_table, "",
        "## Deployment", "",
        f"- parameters {card['parameters']:,}, {card['macs'] / 1e6:.1f} M MACs at {card['image_size']} px",
        f"- int8 ONNX {card['int8_bytes'] / 1024:.0f} KB: accuracy {card['int8_accuracy']:.3f} vs fp32 "
        f"{card['fp32_accuracy']:.3f}, top-1 agreement {card['int8_vs_fp32_top1_agreement']:.3f}",
        f"- int8 peak activation memory {card['peak_activation_bytes_int8'] / 1024:.0f} KB",
        f"- batch-1 latency, one thread: PyTorch eager {bench['torch_eager_1thread_b1_p50_ms']} ms, ONNX Runtime "
        f"fp32 {bench['ort_fp32_1thread_b1_p50_ms']} ms, int8 {bench['ort_int8_1thread_b1_p50_ms']} ms", "",
        *compute,
        "![comparison](comparison.png) ![KD confusion matrix](eval/distill/confusion_matrix.png)", "",
        "Research use only: not a medical device.", ""])


class Stage(NamedTuple):
    """One step of `kndnet run`. `every_rank`: under DDP each rank runs it (it trains, or the training after it
    needs its result); the others run on rank 0 alone."""
    name: str
    run: Callable[[Run], None]
    every_rank: bool


STAGES: list[Stage] = [
    Stage("prepare", _prepare, True), Stage("teacher", _train("teacher"), True),
    Stage("ensemble", _train_ensemble, True), Stage("teacher_cache", _cache_teacher, True),
    Stage("student", _train("student"), True), Stage("distill", _distill, True),
    Stage("evaluate", _evaluate, False), Stage("export", _export, False), Stage("bench", _bench, False),
    Stage("report", _report, False),
]
