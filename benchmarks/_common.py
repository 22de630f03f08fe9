"""Shared bits of the benchmark scripts: the real data path and a stratified subset."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000"


def data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=str(REAL_DATA), help="HAM10000-layout folder")


def subset(manifest: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """n rows drawn evenly across classes' proportions (deterministic)."""
    frac = min(1.0, n / len(manifest))
    return (manifest.groupby("label", group_keys=False).sample(frac=frac, random_state=seed)
            .head(n).reset_index(drop=True))


def print_rates(rates: dict[str, float], baseline: str, width: int, label: str = "") -> None:
    """One line per path: images per second and the ratio to `baseline`'s (named `label`, or the baseline)."""
    for name, rate in rates.items():
        print(f"  {name:{width}s} {rate:7.1f} img/s  ({rate / rates[baseline]:.2f}x {label or baseline})")


def time_int8_teachers_only() -> None:
    """Turn off the int8 teacher's agreement check: a new, untrained head scores near-uniform logits whose
    argmax int8 rounding flips freely, so the check that guards a trained teacher (distill/onnx_teacher.py)
    means nothing for these benchmarks' teachers, whose int8 rows time it only."""
    from kndnet.distill import onnx_teacher
    onnx_teacher.MIN_INT8_AGREEMENT = 0.0
