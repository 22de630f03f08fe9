"""Whether two runs of one recipe are the same run, stage by stage: each training stage's epoch log (every column
but its wall time) and best checkpoint's weights, and each evaluation's scores.

Usage: python scripts/same_run.py RUN_A RUN_B
Each argument is a `kndnet run --out` folder (or any folder holding stage folders with metrics.csv and
checkpoints/best.ckpt, and eval/NAME/metrics.json). Why: on one machine, training here is deterministic (the same
code, seed and data give the same weights), so a rerun that reproduces a run bit for bit shows that its figures
are the code's and not chance; where they differ, the first differing epoch says where. Exits 1 if anything
differs or a stage is missing from RUN_B.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from kndnet.checkpoint import torch_load_weights

TIMING_COLUMNS = ("train_seconds",)   # wall time: differs between two runs of the same work
SETTING_KEYS = ("model", "data")      # where an evaluation read its model and images: paths, not scores


class Verdict(NamedTuple):
    name: str
    same: bool
    detail: str


def training_stages(run: Path) -> list[str]:
    """The run's training stage folders (teacher, teacher_<arch>, student, distill, ...), in name order."""
    return sorted(folder.name for folder in run.iterdir()
                  if (folder / "metrics.csv").is_file() and (folder / "checkpoints" / "best.ckpt").is_file())


def first_differing_epoch(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """'' when the two epoch logs agree exactly (timing aside), else where they first part."""
    a, b = (log.drop(columns=[c for c in TIMING_COLUMNS if c in log.columns]) for log in (a, b))
    if list(a.columns) != list(b.columns):
        return f"columns differ: {sorted(set(a.columns) ^ set(b.columns))}"
    for row in range(min(len(a), len(b))):
        differing = [c for c in a.columns if not _equal(a.iloc[row][c], b.iloc[row][c])]
        if differing:
            return f"epoch {row + 1} differs first ({', '.join(differing[:4])})"
    return "" if len(a) == len(b) else f"{len(a)} against {len(b)} epochs"


def _equal(x, y) -> bool:
    return (pd.isna(x) and pd.isna(y)) or x == y


def weight_difference(a: Path, b: Path) -> float:
    """The largest absolute difference between two checkpoints' weights (inf if their tensors do not line up)."""
    weights_a, weights_b = (torch_load_weights(path)["state_dict"] for path in (a, b))
    if weights_a.keys() != weights_b.keys() or any(weights_a[k].shape != weights_b[k].shape for k in weights_a):
        return float("inf")
    return max((float((weights_a[k].double() - weights_b[k].double()).abs().max()) for k in weights_a
                if weights_a[k].numel()), default=0.0)


def compare_stage(a: Path, b: Path) -> Verdict:
    if not (b / "metrics.csv").is_file() or not (b / "checkpoints" / "best.ckpt").is_file():
        return Verdict(a.name, False, f"missing from {b.parent}")
    epochs = pd.read_csv(a / "metrics.csv")
    log = first_differing_epoch(epochs, pd.read_csv(b / "metrics.csv"))
    gap = weight_difference(a / "checkpoints" / "best.ckpt", b / "checkpoints" / "best.ckpt")
    detail = f"{len(epochs)} epochs, {log or 'epoch logs identical'}, best weights {_weights_verdict(gap)}"
    return Verdict(a.name, not log and gap == 0, detail)


def _weights_verdict(gap: float) -> str:
    if gap == float("inf"):
        return "of other tensors (names or shapes)"
    return "identical" if gap == 0 else f"differ by up to {gap:.3g}"


def compare_evaluation(a: Path, b: Path) -> Verdict:
    name = f"eval/{a.parent.name}"
    if not b.is_file():
        return Verdict(name, False, f"missing: {b}")
    scores_a, scores_b = (json.loads(path.read_text()) for path in (a, b))
    differing = sorted(key for key in scores_a.keys() | scores_b.keys()
                       if key not in SETTING_KEYS and scores_a.get(key) != scores_b.get(key))
    shown = ", ".join(f"{k} {scores_a.get(k)} -> {scores_b.get(k)}" for k in differing[:3])
    return Verdict(name, not differing, "scores identical" if not differing else f"{len(differing)} differ: {shown}")


def compare_runs(a: Path, b: Path) -> list[Verdict]:
    verdicts = [compare_stage(a / stage, b / stage) for stage in training_stages(a)]
    for metrics in sorted(a.glob("eval/*/metrics.json")):
        verdicts.append(compare_evaluation(metrics, b / "eval" / metrics.parent.name / "metrics.json"))
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args(argv)
    for run in (args.run_a, args.run_b):
        if not run.is_dir():
            parser.error(f"{run} is not a folder: pass two `kndnet run --out` folders")
    verdicts = compare_runs(args.run_a, args.run_b)
    if not verdicts:
        parser.error(f"{args.run_a} holds no training stage (metrics.csv and checkpoints/best.ckpt) or evaluation")
    for verdict in verdicts:
        print(f"{'same     ' if verdict.same else 'DIFFERENT'}  {verdict.name}: {verdict.detail}")
    return 0 if all(verdict.same for verdict in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
