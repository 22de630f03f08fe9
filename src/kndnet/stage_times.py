"""What a `kndnet run` cost: the wall time of each stage, summed over interrupted starts, and each training
stage's seconds per epoch.

Why: a result is only reproducible on a budget if its compute is known, stage by stage (the KD epoch against the
student-alone epoch is the cost of distillation). The run folder keeps one row per stage per start in
stage_times.csv, written as each stage ends (finished, skipped or interrupted), so a resumed run adds its rows to
the earlier ones; the report turns them into its Compute section.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from kndnet.data.manifest import write_csv_atomic

TIMES_NAME = "stage_times.csv"
TRAINING_FOLDERS = ("teacher", "teacher_*", "student", "distill")  # run sub-folders with a metrics.csv


@contextlib.contextmanager
def timed_stage(out: Path, stage: str) -> Iterator[None]:
    """Time the block and append (start, stage, seconds, finished) to out/stage_times.csv, also when it raises."""
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    finished = False
    try:
        yield
        finished = True
    finally:
        row = pd.DataFrame([{"start": started.isoformat(timespec="seconds"), "stage": stage,
                             "seconds": round(time.perf_counter() - clock, 1), "finished": finished}])
        path = out / TIMES_NAME
        write_csv_atomic(pd.concat([pd.read_csv(path), row]) if path.is_file() else row, path)


def stage_minutes(out: Path) -> dict[str, float]:
    """Wall minutes of each stage, summed over every start of the run, in the order the stages first ran."""
    path = out / TIMES_NAME
    if not path.is_file():
        return {}
    seconds = pd.read_csv(path).groupby("stage", sort=False)["seconds"].sum()
    return {stage: round(value / 60, 1) for stage, value in seconds.items()}


def epoch_seconds(out: Path) -> dict[str, dict[str, float]]:
    """For each training folder of the run: epochs run, the median and total training seconds (metrics.csv)."""
    result = {}
    for pattern in TRAINING_FOLDERS:
        for metrics in sorted(out.glob(f"{pattern}/metrics.csv")):
            seconds = pd.read_csv(metrics)["train_seconds"].dropna()
            if len(seconds):
                result[metrics.parent.name] = {"epochs": len(seconds), "median": round(float(seconds.median()), 1),
                                               "total": round(float(seconds.sum()), 1)}
    return result


def kd_cost_ratio(epochs: dict[str, dict[str, float]]) -> float | None:
    """The KD student's median epoch over the student alone's: what distillation costs per epoch."""
    if "distill" not in epochs or "student" not in epochs or not epochs["student"]["median"]:
        return None
    return round(epochs["distill"]["median"] / epochs["student"]["median"], 2)


def run_compute(out: Path) -> dict[str, object]:
    """The run's compute, for summary.json and the report: stage minutes, epoch seconds, the KD cost ratio."""
    epochs = epoch_seconds(out)
    return {"stage_minutes": stage_minutes(out), "epoch_seconds": epochs, "kd_vs_alone_epoch": kd_cost_ratio(epochs)}


def compute_section(compute: dict) -> list[str]:
    """The report's Compute section (markdown lines) from `run_compute`'s figures."""
    minutes, epochs, ratio = compute["stage_minutes"], compute["epoch_seconds"], compute["kd_vs_alone_epoch"]
    lines = ["## Compute", ""]
    if minutes:
        lines += ["Wall time of each stage, summed over every start of the run (`stage_times.csv`); the report's "
                  "own is not in it yet.", "", "| stage | minutes |", "| --- | --- |",
                  *(f"| {stage} | {value:.1f} |" for stage, value in minutes.items()),
                  f"| all | {sum(minutes.values()):.1f} |", ""]
    else:
        lines += ["Stage times were not recorded (a run started before `stage_times.csv` existed).", ""]
    if epochs:
        lines += ["| model | epochs | median training s per epoch | training minutes |", "| --- | --- | --- | --- |",
                  *(f"| {name} | {e['epochs']} | {e['median']:.1f} | {e['total'] / 60:.1f} |"
                    for name, e in epochs.items()), ""]
    if ratio is not None:
        lines += [f"A KD epoch took {ratio:.2f}x a student-alone epoch (medians).", ""]
    return lines
