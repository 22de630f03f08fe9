"""Would a teacher teach better balanced targets with its class prior shifted? Checked on validation.

Usage: python scripts/prior_shift_check.py EVAL_DIR MANIFEST
EVAL_DIR is a `kndnet evaluate --split val` of the teacher. Its probabilities are shifted by
delta * log(n_c) (n_c: training images of class c), as `distill.teacher_prior_shift` does online
(delta -0.5 moves a square-root-sampled teacher to the balanced student's uniform prior), and scored
for a few deltas. Validation only: the test split is never looked at for this choice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from kndnet.classes import CLASS_CODES
from kndnet.data.manifest import load_manifest
from kndnet.data.selection import class_counts, split_rows

DELTAS = (0.0, -0.25, -0.5, -0.75, -1.0)


def shifted_scores(probs: np.ndarray, y: np.ndarray, counts: np.ndarray, delta: float) -> dict[str, float]:
    pred = (np.log(np.clip(probs, 1e-8, None)) + delta * np.log(np.maximum(counts, 1))).argmax(1)
    return {"accuracy": accuracy_score(y, pred), "balanced_accuracy": balanced_accuracy_score(y, pred),
            "macro_f1": f1_score(y, pred, average="macro", labels=range(len(CLASS_CODES)), zero_division=0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dir", type=Path)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--val-fold", type=int, default=0)
    args = parser.parse_args()
    table = pd.read_csv(args.eval_dir / "predictions.csv")
    probs = table[[f"prob_{c}" for c in CLASS_CODES]].to_numpy()
    y = np.array([CLASS_CODES.index(c) for c in table["true_label"]])
    counts = np.array(class_counts(split_rows(load_manifest(args.manifest), "train", args.val_fold)))
    print(f"{len(y)} images; training counts {dict(zip(CLASS_CODES, counts.tolist()))}")
    for delta in DELTAS:
        s = shifted_scores(probs, y, counts, delta)
        print(f"  delta {delta:+.2f}: accuracy {s['accuracy']:.3f}  balanced accuracy "
              f"{s['balanced_accuracy']:.3f}  macro-F1 {s['macro_f1']:.3f}")


if __name__ == "__main__":
    main()
