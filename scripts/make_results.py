"""Regenerate docs/RESULTS.md (and its figures) from a `kndnet run` directory on real HAM10000.

Usage: python scripts/make_results.py RUN_DIR [--recipe cpu] [--mcu-export DIR] [--out docs]
Reads only files the pipeline wrote (eval/*/metrics.json, export/export.json, bench/bench.json,
student/distill metrics), so every number in the page traces back to a command that was run. The one
exception is the hand-kept block of the page it replaces (between KEPT_START and KEPT_END): experiments
run outside `kndnet run`, each with its own command, which a regenerated page carries over verbatim.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from kndnet.config import DataConfig
from kndnet.evaluation.metrics import with_ci
from kndnet.io import atomic_write_text
from kndnet.stage_times import compute_section, folder_epoch_seconds, run_compute

KEPT_START = "<!-- hand-kept: make_results.py carries this block over verbatim -->"
KEPT_END = "<!-- end of the hand-kept block -->"

PUBLISHED = {  # Lishad et al. (2025), fold 0 of GroupKFold, selected and reported on the same fold
    "student alone": {"accuracy": 0.692, "macro_f1": 0.585},
    "student + KD": {"accuracy": 0.804, "macro_f1": 0.670},
    "teacher": {"accuracy": 0.814, "macro_f1": 0.725},
}


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _row(name: str, m: dict, params: str, extra: str = "") -> str:
    pub = PUBLISHED.get(name)
    published = f"{pub['accuracy']:.3f} / {pub['macro_f1']:.3f}" if pub else "-"
    return (f"| {name} | {with_ci(m, 'accuracy')} | {with_ci(m, 'balanced_accuracy')} | {with_ci(m, 'macro_f1')} | "
            f"{params} | {extra} | {published} |")


def _config(run: Path, role: str) -> dict:
    return yaml.safe_load((run / role / "config.yaml").read_text())


def _teacher_row(run: Path) -> str:
    """The teacher the students learned from: one model, or the mean logit of an ensemble's members."""
    scored = _load(run / "eval" / "teacher" / "metrics.json")
    members = [run / Path(path).parent.parent.name for path in scored["model"].split(" + ")]
    summaries = [_load(member / "summary.json") for member in members]
    cfg = _config(run, "teacher")
    archs = " + ".join(summary["arch"] for summary in summaries)
    mean = f" (mean logit of {len(members)})" if len(members) > 1 else ""
    return _row("teacher", scored, " + ".join(f"{summary['parameters']:,}" for summary in summaries),
                f"{archs}{mean}, weights: {cfg['model']['pretrained']}, {cfg['data']['image_size']} px")


METHOD_DATA = DataConfig()  # the views' strength a note leaves unsaid


def _not_method(data: dict, key: str) -> bool:
    """Whether a run's data section sets `key` off the default (a config from before the key holds the default)."""
    return data.get(key, getattr(METHOD_DATA, key)) != getattr(METHOD_DATA, key)


def kept_block(previous_page: str) -> list[str]:
    """The hand-kept block of the page being replaced, markers included ([] if it has none)."""
    starts, ends = previous_page.count(KEPT_START), previous_page.count(KEPT_END)
    if starts == ends == 0:
        return []
    start, end = previous_page.find(KEPT_START), previous_page.find(KEPT_END)
    if starts != 1 or ends != 1 or end < start:
        raise SystemExit(f"the page's hand-kept block is broken: it needs one {KEPT_START!r}, then one {KEPT_END!r}")
    return [previous_page[start:end + len(KEPT_END)], ""]


def _student_note(run: Path, image_size: int) -> str:
    cfg = _config(run, "student")
    views, train = cfg["data"].get("train_views", 0), cfg["train"]
    levers = [f"views cut at {cfg['data']['view_size']} px" if cfg["data"].get("view_size") else "",
              f"crops down to {cfg['data']['crop_scale_min']:g} of the image"
              if _not_method(cfg["data"], "crop_scale_min") else "",
              f"colour jitter x{cfg['data']['jitter_strength']:g}"
              if _not_method(cfg["data"], "jitter_strength") else "",
              f"mixup {train['mixup_alpha']} / CutMix {train['cutmix_alpha']}"
              if train.get("mixup_alpha") or train.get("cutmix_alpha") else "",
              f"EMA {train['ema_decay']}" if train.get("ema_decay") else ""]
    return ", ".join([f"{image_size} px, {train['epochs']} epochs",
                      f"the same {views} fixed views per image as KD" if views else "fresh augmentation per epoch",
                      *(lever for lever in levers if lever)])


def _kd_note(run: Path) -> str:
    d = _config(run, "distill")["distill"]
    source = f"{_load(run / 'teacher_cache' / 'teacher_cache.json')['views']} cached teacher views" \
        if (run / "teacher_cache").is_dir() else "function matching: the online teacher scores the same mixed view"
    loss = {"cmkd": f"confidence-masked KD (T {d['temperature']}, alpha {d['alpha']}, threshold {d['threshold']})",
            "hinton": f"Hinton KD (T {d['temperature']}, alpha {d['alpha']})"}.get(d["loss"], f"{d['loss']} KD")
    return f"{loss}, {source}"


def _gradcam_examples(run: Path, out: Path, n: int = 4) -> list[str]:
    preds = pd.read_csv(run / "eval" / "distill" / "predictions.csv")
    manifest = pd.read_csv(run / "manifest.csv").set_index("image_id")
    picks = preds.groupby("true_label").head(1).head(n)
    paths = [manifest.at[i, "path"] for i in picks["image_id"]]
    target = out / "figures" / "gradcam"
    subprocess.run([sys.executable, "-m", "kndnet.cli", "explain", *paths, "--model",
                    str(run / "export" / "model.ckpt"), "--out", str(target)], check=True)
    return sorted(str(p.relative_to(out)) for p in target.glob("*_gradcam.png"))


def _run_of(eval_dir: Path) -> Path | None:
    """The training run behind an evaluation (its model was RUN/checkpoints/NAME.ckpt), if it is there."""
    run = Path(_load(eval_dir / "metrics.json")["model"]).parent.parent
    return run if (run / "summary.json").is_file() else None


def _epoch_cost(trained: Path | None) -> str:
    """Median training seconds per epoch and the epochs run (robust to a run paused or shared for a while)."""
    seconds = folder_epoch_seconds(trained) if trained else None
    return f"{seconds['median']:.0f} x {seconds['epochs']}" if seconds else "-"


def lever_table(run: Path, levers: list[str]) -> list[str]:
    """One row per lever, in order: NAME=TEST_EVAL_DIR[=VAL_EVAL_DIR] (folders relative to RUN).

    Validation macro-F1 comes from the val evaluation when given, else from the training summary; the
    difference is a paired bootstrap against the row before on the same test images; the cost is the median
    training seconds per epoch times the epochs."""
    from kndnet.evaluation.compare import paired_difference
    lines = ["| lever | val macro-F1 | test macro-F1 | minus the row before (paired 95% CI) | s/epoch x epochs |",
             "| --- | --- | --- | --- | --- |"]
    previous = None
    for name, folder, *val_folder in (item.split("=") for item in levers):
        eval_dir = run / folder
        m, trained = _load(eval_dir / "metrics.json"), _run_of(eval_dir)
        summary = _load(trained / "summary.json") if trained else {}
        val = _load(run / val_folder[0] / "metrics.json")["macro_f1"] if val_folder else \
            summary.get("best_val_macro_f1")
        diff = "-"
        if previous is not None:
            d = paired_difference(previous, eval_dir)["macro_f1"]
            diff = f"{d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
        lines.append(f"| {name} | {'-' if val is None else f'{val:.3f}'} | {with_ci(m, 'macro_f1')} | {diff} | "
                     f"{_epoch_cost(trained)} |")
        previous = eval_dir
    return lines


def results_page(run: Path, out: Path, mcu: Path | None, shipped: Path | None = None,
                 gradcam: bool = False, extra: list[str] = (), notes: list[str] = (),
                 levers: list[str] = (), lever_notes: list[str] = (), shipped_val: Path | None = None,
                 recipe_name: str = "cpu", kept: list[str] = ()) -> str:
    ev = {r: _load(run / "eval" / r / "metrics.json") for r in ("student", "distill")}
    card, bench = _load(run / "export" / "export.json"), _load(run / "bench" / "bench.json")
    recipe = (run / "recipe.yaml").read_text()
    s_params = f"{card['parameters']:,}"
    kd = ev["distill"]
    tta = {k.removeprefix("tta_"): v for k, v in kd.items() if k.startswith("tta_")}
    lines = [
        "# Results on real HAM10000 images", "",
        f"Run: `kndnet run --config {recipe_name} --data ../shared/data/ham10000` (5,984 images, one per lesion), then "
        "`python scripts/make_results.py`. Every model was selected on the validation fold and is scored here on "
        f"the lesion-grouped held-out test split ({kd['images']} images) that no selection saw. 95% bootstrap "
        "CIs (1,000 resamples) in brackets.", "",
        "| model | accuracy | balanced accuracy | macro-F1 | parameters | notes | published acc. / macro-F1 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        _teacher_row(run),
        _row("student alone", ev["student"], s_params, _student_note(run, card["image_size"])),
        _row("student + KD", kd, s_params, _kd_note(run)),
        _row("student + KD + TTA (hflip)", tta, s_params, "average of image and its mirror"),
        *[_row(name, _load(run / folder / "metrics.json"), s_params, "extra run, same split")
          for name, folder in (item.split("=", 1) for item in extra)],
        f"| student + KD, int8 ONNX | {card['int8_accuracy']:.3f} | - | {card['int8_macro_f1']:.3f} | {s_params} | "
        f"{card['int8_bytes'] / 1024:.0f} KB, top-1 agreement with fp32 "
        f"{card['int8_vs_fp32_top1_agreement']:.3f} | - |",
        *(line for note in notes for line in ("", note)),
        "", "The published figures (Lishad et al., 2025) come from fold 0 of the full 10,015-image release, the "
        "same fold that selected the best epoch, with an EfficientNet-B4 teacher at 224 px: a different split, "
        "data size and protocol, shown for orientation only.", "",
        "## Is the KD gain real?", "", _kd_verdict(run, ev["student"], kd), "",
        *_colour_cast_section(run),
        *(["## What each lever did", "", *lever_table(run, list(levers)),
           *(line for note in lever_notes for line in ("", note)), ""] if levers else []),
        *kept,
        "## Cost", "",
        f"- student: {card['parameters']:,} parameters, {card['macs'] / 1e6:.1f} M MACs at {card['image_size']} px",
        f"- int8 ONNX {card['int8_bytes'] / 1024:.0f} KB; peak int8 activation memory "
        f"{card['peak_activation_bytes_int8'] / 1024:.0f} KB (graph liveness, batch 1)",
        f"- batch-1 latency on one thread of this 2-core machine: PyTorch eager "
        f"{bench['torch_eager_1thread_b1_p50_ms']} ms, ONNX Runtime fp32 {bench['ort_fp32_1thread_b1_p50_ms']} ms, "
        f"int8 {bench['ort_int8_1thread_b1_p50_ms']} ms", "",
        *compute_section(run_compute(run)),
    ]
    if mcu:
        lines += _mcu_section(mcu)
    if shipped:
        lines += _shipped_section(shipped, run, shipped_val)
    shutil.copy(run / "eval" / "distill" / "confusion_matrix.png", out / "figures" / "confusion_matrix_kd.png")
    lines += ["## Figures", "", "Confusion matrix of student + KD on the test split:", "",
              "![confusion matrix](figures/confusion_matrix_kd.png)", "", "## Grad-CAM", ""]
    if gradcam:
        lines += [f"![Grad-CAM]({p})" for p in _gradcam_examples(run, out)]
    else:
        lines += ["Grad-CAM overlays show the HAM10000 pixels they explain, and no part of those images may enter "
                  "this repository (data licence and project rule), so they are not committed. Regenerate them "
                  "locally, one per test image of each class, with `python scripts/make_results.py RUN --gradcam "
                  "--out runs/results`, or for any image with `kndnet explain IMAGE --out cams`."]
    lines += ["", "## Recipe", "", "```yaml", recipe.strip(), "```", ""]
    return "\n".join(lines)


def _kd_verdict(run: Path, student: dict, kd: dict) -> str:
    from kndnet.evaluation.compare import paired_difference
    d = paired_difference(run / "eval" / "student", run / "eval" / "distill")["macro_f1"]
    overlap = kd["macro_f1_ci_low"] <= student["macro_f1_ci_high"]
    if d["ci_low"] > 0 and not overlap:
        verdict = "The gain is real by both tests: the paired interval excludes zero and the intervals do not overlap."
    elif d["ci_low"] > 0:
        verdict = ("The paired interval excludes zero, so KD beat the student alone on these images beyond "
                   "resampling noise; the two separate intervals still overlap, so the margin is not larger "
                   "than their overlap.")
    else:
        verdict = "The paired interval includes zero: this run does not show a KD gain beyond resampling noise."
    return (f"Macro-F1 of student + KD minus student alone: {d['difference']:+.3f}, paired bootstrap 95% CI "
            f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] over the same {kd['images']} test images; KD did not "
            f"beat the student alone in {d['p_not_better']:.1%} of resamples (KD {kd['macro_f1']:.3f} "
            f"[{kd['macro_f1_ci_low']:.3f}, {kd['macro_f1_ci_high']:.3f}], alone {student['macro_f1']:.3f} "
            f"[{student['macro_f1_ci_low']:.3f}, {student['macro_f1_ci_high']:.3f}]). {verdict}")


def _colour_cast_section(run: Path) -> list[str]:
    """Each model beside itself under the run's simulated colour cast (eval/<role>_cast, written by `kndnet run`
    since the cast was added; nothing for an older run)."""
    roles = {"teacher": "teacher", "student alone": "student", "student + KD": "distill"}
    if not all((run / "eval" / f"{role}_cast" / "metrics.json").is_file() for role in roles.values()):
        return []
    pairs = {name: (_load(run / "eval" / role / "metrics.json"), _load(run / "eval" / f"{role}_cast" / "metrics.json"))
             for name, role in roles.items()}
    sigma = next(iter(pairs.values()))[1]["colour_cast"]
    lines = ["## Under a simulated colour cast", "",
             f"The same test images, each under its own white-balance change (log-normal RGB gains, sigma {sigma}: "
             f"`kndnet evaluate --colour-cast {sigma}`), a stand-in for another dermoscope; the external test set "
             "that shows the real gap is not held here.", "",
             "| model | balanced accuracy | macro-F1 | under the cast: balanced accuracy | macro-F1 |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {plain['balanced_accuracy']:.3f} | {plain['macro_f1']:.3f} | "
              f"{cast['balanced_accuracy']:.3f} | {cast['macro_f1']:.3f} |" for name, (plain, cast) in pairs.items()]
    return [*lines, ""]


def _mcu_section(mcu: Path) -> list[str]:
    card = _load(mcu / "export.json")
    return ["## Microcontroller variant", "",
            f"The same student trained alone at {card['image_size']} px: int8 peak activation memory "
            f"{card['peak_activation_bytes_int8'] / 1024:.0f} KB (fits 320 KB of SRAM), "
            f"{card['macs'] / 1e6:.1f} M MACs, int8 file {card['int8_bytes'] / 1024:.0f} KB; on the test split "
            f"accuracy {card['int8_accuracy']:.3f} and macro-F1 {card['int8_macro_f1']:.3f} at int8 "
            f"(fp32 {card['fp32_accuracy']:.3f} / {card['fp32_macro_f1']:.3f}).", ""]


def _shipped_section(export: Path, run: Path, shipped_val: Path | None = None) -> list[str]:
    """The shipped student; `shipped_val` (a val evaluation) when it comes from another run than RUN."""
    card = _load(export / "export.json")
    own = f"validation macro-F1 {_load(shipped_val / 'metrics.json')['macro_f1']:.3f}; " if shipped_val else ""
    return ["## Shipped model", "",
            f"`kndnet predict` uses {card['arch']} at {card['image_size']} px, exported from `{export}` (best epoch "
            f"by validation macro-F1; {own}this run's students: alone {_val_f1(run, 'student')}, + KD "
            f"{_val_f1(run, 'distill')}). On the test split: fp32 accuracy "
            f"{card['fp32_accuracy']:.3f}, macro-F1 {card['fp32_macro_f1']:.3f}; int8 accuracy "
            f"{card['int8_accuracy']:.3f}, macro-F1 {card['int8_macro_f1']:.3f} "
            f"({card['int8_bytes'] / 1024:.0f} KB, top-1 agreement {card['int8_vs_fp32_top1_agreement']:.3f}).", ""]


def _val_f1(run: Path, role: str) -> str:
    return f"{_load(run / role / 'summary.json')['best_val_macro_f1']:.3f}"


def _check_recipe(run: Path, name: str) -> None:
    """The page prints `kndnet run --config NAME` as the run's command: NAME must be the recipe RUN used.

    Compared as resolved configs, not as text: a recipe kept under a new name when its successor took the old one
    (cpu -> cpu_v5) gets a new header comment and may be rewritten as `extends:` its successor, and the page must
    still be rebuildable from the run it describes."""
    from kndnet.config import recipe_path, resolved_recipe
    from kndnet.errors import ConfigError
    try:
        same = resolved_recipe(recipe_path(name)) == resolved_recipe(run / "recipe.yaml")
    except ConfigError as err:
        raise SystemExit(f"cannot compare {run / 'recipe.yaml'} with the recipe {name!r}: {err}") from None
    if not same:
        raise SystemExit(f"{run / 'recipe.yaml'} is not the recipe {name!r}: pass --recipe with the recipe it "
                         "was run with")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--recipe", default="cpu", help="the recipe RUN was made with (`kndnet run --config`)")
    parser.add_argument("--mcu-export", type=Path)
    parser.add_argument("--shipped-export", type=Path, help="export folder of the shipped student")
    parser.add_argument("--shipped-val", type=Path, help="val evaluation of the shipped student, when it comes "
                        "from another run")
    parser.add_argument("--gradcam", action="store_true", help="also render Grad-CAM examples (not for the repo)")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=EVAL_DIR",
                        help="another evaluated student (folder relative to RUN), as one more table row")
    parser.add_argument("--note", action="append", default=[], help="a sentence under the table (e.g. how an "
                        "--extra row was made)")
    parser.add_argument("--lever", action="append", default=[], metavar="NAME=TEST_EVAL[=VAL_EVAL]",
                        help="a row of the 'what each lever did' table, in order (folders relative to RUN)")
    parser.add_argument("--lever-note", action="append", default=[], help="a sentence under the lever table")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    (args.out / "figures").mkdir(parents=True, exist_ok=True)
    _check_recipe(args.run, args.recipe)
    page_path = args.out / "RESULTS.md"
    kept = kept_block(page_path.read_text()) if page_path.is_file() else []
    page = results_page(args.run, args.out, args.mcu_export, args.shipped_export, args.gradcam, args.extra,
                        args.note, args.lever, args.lever_note, args.shipped_val, args.recipe, kept)
    atomic_write_text(page_path, page)
    print(f"wrote {args.out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
