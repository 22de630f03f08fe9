"""What a `kndnet run` cost: the wall time of each stage, summed over interrupted starts, and each training
stage's seconds per epoch.

Why: a result is only reproducible on a budget if its compute is known, stage by stage (the KD epoch against the
student-alone epoch is the cost of distillation). The run folder keeps stage_times.csv, appended to as stages
start and end: a `started` row, then one row with the seconds and how the stage ended (`ran`, `skipped`: its
output was there, `raised`: an error or Ctrl-C). A start killed outright (SIGKILL, out of memory) leaves only its
`started` row, so the report can say that it was not timed; a resumed run adds its rows to the earlier ones.
"""

from __future__ import annotations

import contextlib
import csv
import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from kndnet.errors import KNDNetWarning

TIMES_NAME = "stage_times.csv"
COLUMNS = ("start", "stage", "status", "seconds")
STATUSES = ("started", "ran", "skipped", "raised")
TIMED = ("ran", "raised")  # rows whose seconds are compute spent; `skipped` rows found the work done
TRAINING_FOLDERS = ("teacher", "teacher_*", "student", "distill")  # run sub-folders with a metrics.csv


def _append(path: Path, row: dict[str, object]) -> None:
    """One line added to the CSV (a header first when it is new); a failure warns, never masks the stage's own
    outcome: the timing is a record, not part of the run."""
    try:
        new = not path.is_file() or not path.stat().st_size
        cut_short = not new and not _ends_with_newline(path)  # a write killed mid-row: start a line of our own
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, COLUMNS)
            if new:
                writer.writeheader()
            if cut_short:
                handle.write("\n")
            writer.writerow(row)
    except OSError as err:
        warnings.warn(f"could not record the stage time in {path} ({err}); the run goes on", KNDNetWarning)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


@contextlib.contextmanager
def timed_stage(out: Path, stage: str, enabled: bool = True) -> Iterator[dict[str, str]]:
    """Time the block into out/stage_times.csv. Yields the row's status (`ran`), which the caller may set to
    `skipped`; an exception sets `raised` and propagates. `enabled` False (a DDP rank that does not own the run
    folder) records nothing."""
    entry = {"status": "ran"}
    if not enabled:
        yield entry
        return
    path, started = out / TIMES_NAME, datetime.now(timezone.utc).isoformat(timespec="seconds")
    _append(path, {"start": started, "stage": stage, "status": "started", "seconds": ""})
    clock = time.perf_counter()
    try:
        yield entry
    except BaseException:
        entry["status"] = "raised"
        raise
    finally:
        _append(path, {"start": started, "stage": stage, "status": entry["status"],
                       "seconds": round(time.perf_counter() - clock, 1)})


def stage_times(out: Path) -> dict[str, dict[str, object]]:
    """Per stage, in the order the stages first ran: seconds of compute summed over every timed start (None when
    every start found it done, e.g. it ran before stage_times.csv existed), and the starts killed untimed. A
    `started` row at the very end is the stage running now (the report, when it calls this): left out."""
    rows = _read_rows(out / TIMES_NAME)
    if len(rows) and rows["status"].iloc[-1] == "started":
        rows = rows.iloc[:-1]
    result = {}
    for stage, group in rows.groupby("stage", sort=False):
        ended = group[group["status"] != "started"]
        timed = ended[ended["status"].isin(TIMED)]
        result[stage] = {"seconds": round(float(timed["seconds"].sum()), 1) if len(timed) else None,
                         "killed_starts": max(0, int((group["status"] == "started").sum()) - len(ended))}
    return result


def _read_rows(path: Path) -> pd.DataFrame:
    """stage_times.csv's rows; a row cut short by a killed write (too few or too many fields, an unknown status) is
    dropped, and a file that cannot be read at all warns and counts as none, so a damaged record never stops a run's
    report."""
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    try:
        rows = pd.read_csv(path, on_bad_lines="skip", dtype={"start": str, "stage": str, "status": str})
        rows = rows[list(COLUMNS)][rows["status"].isin(STATUSES)].dropna(subset=["stage"])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, KeyError, UnicodeDecodeError, OSError) as err:
        warnings.warn(f"{path} could not be read ({err}); its stage times are left out of the report "
                      "(delete the file to start a new record)", KNDNetWarning)
        return pd.DataFrame(columns=COLUMNS)
    return rows.assign(seconds=pd.to_numeric(rows["seconds"], errors="coerce"))


def folder_epoch_seconds(folder: Path) -> dict[str, float] | None:
    """One training run's epochs, median and total training seconds (its metrics.csv), or None. Unrounded: a
    demo's epochs last about a second, where rounding the medians moved their ratio by a tenth."""
    metrics = folder / "metrics.csv"
    seconds = pd.read_csv(metrics)["train_seconds"].dropna() if metrics.is_file() else []
    if not len(seconds):
        return None
    return {"epochs": len(seconds), "median": float(seconds.median()), "total": float(seconds.sum())}


def epoch_seconds(out: Path) -> dict[str, dict[str, float]]:
    """`folder_epoch_seconds` of each training folder of the run (teacher, its ensemble members, student, distill)."""
    folders = (folder for pattern in TRAINING_FOLDERS for folder in sorted(out.glob(pattern)) if folder.is_dir())
    return {folder.name: seconds for folder in folders if (seconds := folder_epoch_seconds(folder))}


def kd_cost_ratio(epochs: dict[str, dict[str, float]]) -> float | None:
    """The KD student's median epoch over the student alone's: what distillation costs per epoch."""
    if "distill" not in epochs or "student" not in epochs or not epochs["student"]["median"]:
        return None
    return round(epochs["distill"]["median"] / epochs["student"]["median"], 2)


def run_compute(out: Path) -> dict[str, object]:
    """The run's compute, for summary.json and the report: stage times, epoch seconds, the KD cost ratio."""
    epochs = epoch_seconds(out)
    return {"stages": stage_times(out), "epoch_seconds": epochs, "kd_vs_alone_epoch": kd_cost_ratio(epochs)}


def _minutes(stage: dict[str, object]) -> str:
    text = "not recorded" if stage["seconds"] is None else f"{stage['seconds'] / 60:.1f}"
    killed = stage["killed_starts"]
    return text + (f" (+ {killed} start{'s' if killed > 1 else ''} killed untimed)" if killed else "")


def compute_section(compute: dict[str, object]) -> list[str]:
    """The report's Compute section (markdown lines) from `run_compute`'s figures."""
    stages, epochs, ratio = compute["stages"], compute["epoch_seconds"], compute["kd_vs_alone_epoch"]
    lines = ["## Compute", ""]
    if stages:
        total = sum(stage["seconds"] or 0.0 for stage in stages.values()) / 60
        lines += ["Wall time of each stage, summed over every start of the run that timed it (`stage_times.csv`; "
                  "the report stage of the start that wrote this page is not in it).", "",
                  "| stage | minutes |", "| --- | --- |",
                  *(f"| {name} | {_minutes(stage)} |" for name, stage in stages.items()),
                  f"| all timed | {total:.1f} |", ""]
    else:
        lines += ["Stage times were not recorded (no readable `stage_times.csv`: a run started before it existed, "
                  "or the file is damaged).", ""]
    if epochs:
        lines += ["| model | epochs | median training s per epoch | training minutes |", "| --- | --- | --- | --- |",
                  *(f"| {name} | {e['epochs']} | {e['median']:.1f} | {e['total'] / 60:.1f} |"
                    for name, e in epochs.items()), ""]
    if ratio is not None:
        lines += [f"A KD epoch took {ratio:.2f}x a student-alone epoch (medians).", ""]
    return lines
