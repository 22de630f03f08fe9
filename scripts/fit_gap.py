"""How far a student is from its teacher on the same images: top-1 agreement and KL(teacher || student).

Usage: python scripts/fit_gap.py TEACHER_EVAL STUDENT_EVAL [STUDENT_EVAL ...]
Each argument is a `kndnet evaluate --out` folder (its predictions.csv) of the same split. Scored on the training
split and on validation, it tells a fitting gap (the student does not match the teacher even on the images it was
trained on) from a generalisation gap (it matches there and not on new images): docs/RESULTS.md, runs/v39/diag.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from kndnet.errors import KNDNetError
from kndnet.evaluation.compare import read_scores


class Gap(NamedTuple):
    agreement: float   # share of images where the two call the same class
    kl: float          # mean KL(teacher || student), nats


def probabilities(eval_dir: Path) -> pd.DataFrame:
    """The folder's predictions.csv probabilities by image, each row renormalised (the CSV rounds them)."""
    _, probs, ids = read_scores(eval_dir)
    return pd.DataFrame(probs / probs.sum(axis=1, keepdims=True), index=ids)


def fit_gap(teacher: pd.DataFrame, student: pd.DataFrame) -> Gap:
    """Agreement and KL of `student` against `teacher` over the teacher's images (both must score all of them)."""
    missing = teacher.index.difference(student.index)
    if len(missing):
        raise KNDNetError(f"the student was not scored on {len(missing)} of the teacher's images (e.g. "
                          f"{missing[0]}): evaluate both on the same manifest and split")
    t, s = teacher.to_numpy(), student.loc[teacher.index].to_numpy()
    kl = np.sum(t * (np.log(t + 1e-8) - np.log(s + 1e-8)), axis=1).mean()
    return Gap(float(np.mean(t.argmax(1) == s.argmax(1))), float(kl))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("teacher", type=Path, help="`kndnet evaluate --out` folder of the teacher")
    parser.add_argument("students", type=Path, nargs="+", help="the same of each student, on the same split")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        teacher = probabilities(args.teacher)
        for student in args.students:
            gap = fit_gap(teacher, probabilities(student))
            print(f"{student}: top-1 agreement {gap.agreement:.3f}, KL(teacher || student) {gap.kl:.3f} "
                  f"on {len(teacher)} images")
    except KNDNetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
