"""Can any decision rule give a model both target scores on a split, at the ranking it has?

Usage: python scripts/target_reach.py EVAL [EVAL ...] [--rules-from VAL_EVAL ...] [--macro-f1 0.62]
       [--balanced-accuracy 0.70]
Each EVAL is a `kndnet evaluate --out` folder (its predictions.csv). Macro-F1 and balanced accuracy pull a classifier's
decision rule in opposite directions (towards the common classes and away from them), so a model can fail a joint
target either by its rule or by its ranking. This searches the rules argmax(log p + b) over per-class biases b
(coordinate ascent in steps of 0.05, from the trained rule and from shifts towards the balanced rule) for the largest
worst margin min(macro-F1 - target, balanced accuracy - target) on the folder's own labels. Run on the test split
it is an oracle: an upper bound to read, never a selection. A negative best margin says no bias the search found
reaches both targets, so the model's ranking must improve, not its rule (docs/RESULTS.md, "Can a decision rule
reach the targets?"). With `--rules-from`, each EVAL is scored at the rule searched on the matching folder instead
(the same model on validation): what an honest rule carries over.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kndnet.errors import KNDNetError
from kndnet.evaluation.compare import read_scores

# Moves of one class's bias in log-probability units, smallest first: of equally good moves the search keeps the
# smallest.
STEPS = sorted(np.round(np.arange(-3.0, 3.0001, 0.05), 2), key=abs)


class Rule(NamedTuple):
    macro_f1: float
    balanced_accuracy: float
    bias: np.ndarray  # added to log p per class


def scores(labels: np.ndarray, predicted: np.ndarray, classes: int) -> tuple[float, float]:
    """Macro-F1 and balanced accuracy over the classes present in `labels`, as the project's evaluations report them
    (kndnet.evaluation.metrics.CI_METRICS), from one confusion matrix: the search calls this ~25,000 times."""
    confusion = np.zeros((classes, classes))
    np.add.at(confusion, (labels, predicted), 1)
    true, called, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    present = true > 0
    f1 = np.divide(2 * hits, true + called, out=np.zeros(classes), where=(true + called) > 0)
    return float(f1[present].mean()), float((hits[present] / true[present]).mean())


def margin(rule: Rule, targets: tuple[float, float]) -> float:
    """The worse of the two scores' distance above its target (negative: at least one target missed)."""
    return min(rule.macro_f1 - targets[0], rule.balanced_accuracy - targets[1])


def best_rule(labels: np.ndarray, log_probs: np.ndarray, targets: tuple[float, float]) -> Rule:
    """The best of coordinate ascents started from b = -t log(mean predicted probability), t = 0, 0.25, ..., 1.

    The search is local, so it starts from the trained rule and from steps of the shift that undoes the model's own
    learnt prior (its mean prediction) towards the balanced rule (Menon et al., ICLR 2021), and keeps the best.
    """
    learnt_prior = np.log(np.exp(log_probs).mean(0))
    ascents = [ascend(labels, log_probs, targets, -t * learnt_prior) for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    return max(ascents, key=lambda rule: margin(rule, targets))


def ascend(labels: np.ndarray, log_probs: np.ndarray, targets: tuple[float, float], start: np.ndarray,
           passes: int = 6) -> Rule:
    """Coordinate ascent over per-class biases for the largest worst margin; stops when a pass changes nothing.

    Only a strictly larger margin moves a bias, so each class keeps the step nearest its start that reaches its best.
    """
    classes = log_probs.shape[1]

    def rule_for(bias: np.ndarray) -> Rule:
        return Rule(*scores(labels, (log_probs + bias).argmax(1), classes), bias.copy())

    best = rule_for(np.round(start, 2))
    for _ in range(passes):
        improved = False
        for c in range(classes):
            for step in STEPS:
                bias = best.bias.copy()
                bias[c] = round(best.bias[c] + step, 2)
                candidate = rule_for(bias)
                if margin(candidate, targets) > margin(best, targets) + 1e-12:
                    best, improved = candidate, True
        if not improved:
            break
    return best


def log_scores(eval_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels and log-probabilities from a `kndnet evaluate --out` folder."""
    labels, probs, _ = read_scores(eval_dir)
    return labels, np.log(np.clip(probs, 1e-8, None))


def reach(eval_dir: Path, targets: tuple[float, float], rule_from: Path | None = None) -> tuple[Rule, Rule]:
    """The folder's scores at its own rule (b = 0), and at the best rule searched on `rule_from` (default: itself)."""
    labels, log_probs = log_scores(eval_dir)
    classes = log_probs.shape[1]
    as_trained = Rule(*scores(labels, log_probs.argmax(1), classes), np.zeros(classes))
    if rule_from is None:
        return as_trained, best_rule(labels, log_probs, targets)
    bias = best_rule(*log_scores(rule_from), targets).bias
    return as_trained, Rule(*scores(labels, (log_probs + bias).argmax(1), classes), bias)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("evals", nargs="+", type=Path, help="`kndnet evaluate --out` folders")
    parser.add_argument("--macro-f1", type=float, default=0.62, help="target macro-F1 (default: 0.62)")
    parser.add_argument("--balanced-accuracy", type=float, default=0.70,
                        help="target balanced accuracy (default: 0.70)")
    parser.add_argument("--rules-from", nargs="+", type=Path, metavar="VAL_EVAL",
                        help="search each EVAL's rule on this folder instead (one per EVAL, same order)")
    args = parser.parse_args(argv)
    if args.rules_from and len(args.rules_from) != len(args.evals):
        parser.error(f"--rules-from takes one folder per EVAL: {len(args.evals)} EVALs, "
                     f"{len(args.rules_from)} folders")
    targets = (args.macro_f1, args.balanced_accuracy)
    searched_on = "rule from --rules-from" if args.rules_from else "best rule"
    print(f"| evaluation | macro-F1 | balanced accuracy | {searched_on}: macro-F1 | balanced accuracy | worst margin |")
    print("| --- | --- | --- | --- | --- | --- |")
    try:
        for eval_dir, rule_from in zip(args.evals, args.rules_from or [None] * len(args.evals)):
            as_trained, best = reach(eval_dir, targets, rule_from)
            print(f"| {eval_dir} | {as_trained.macro_f1:.3f} | {as_trained.balanced_accuracy:.3f} | "
                  f"{best.macro_f1:.3f} | {best.balanced_accuracy:.3f} | {margin(best, targets):+.3f} |")
    except KNDNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
