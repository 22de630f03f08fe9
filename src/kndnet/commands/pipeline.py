"""Pipeline commands: run (the whole method on your data) and demo (on generated data)."""

from __future__ import annotations

import argparse
from pathlib import Path

from kndnet.commands import command, positive_int, verbose_flag


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline recipe: a YAML file or demo | cpu | method")
    p.add_argument("--data", required=True, help="data folder (any layout `prepare` reads)")
    p.add_argument("--out", required=True, help="run folder; re-running skips finished stages")
    verbose_flag(p)


@command("run", "the whole method: prepare, teacher, cache, student, KD, evaluate, export, bench, report",
         _run_args)
def _run(args: argparse.Namespace) -> int:
    from kndnet.pipeline import recipe_path, run_pipeline
    from kndnet.quiet import quiet_libraries
    with quiet_libraries(args.verbose, progress=True):
        run_pipeline(recipe_path(args.config), args.data, args.out)
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--lesions-per-class", type=positive_int, default=14)
    verbose_flag(p)


@command("demo", "the whole pipeline on generated data in a few minutes (2 CPU cores)", _demo_args)
def _demo(args: argparse.Namespace) -> int:
    from kndnet.data.synth import write_synthetic
    from kndnet.pipeline import recipe_path, run_pipeline
    from kndnet.quiet import quiet_libraries
    data = Path(args.out) / "data"
    if not (data / "HAM10000_metadata.csv").is_file():
        write_synthetic(data, args.lesions_per_class, image_size=64, seed=0)
    with quiet_libraries(args.verbose):
        run_pipeline(recipe_path("demo"), str(data), args.out)
    return 0
