"""Data commands: prepare, synth."""

from __future__ import annotations

import argparse
from pathlib import Path

from kndnet.commands import command, config_flag, config_overrides, positive_int

DATA_HELP = "data folder (any supported layout) or manifest CSV"
FORMAT_HELP = "auto | ham10000 | isic2018 | csv | folders (default: auto)"


def data_args(p: argparse.ArgumentParser) -> None:
    """--data/--format for commands that read data without a config (evaluate, calibrate)."""
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--format", default=None, help=FORMAT_HELP)


def data_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--data/--format as overrides of data.path/data.format, for commands that build a config."""
    config_flag(p, "--data", "data.path", required=required,
                help=DATA_HELP + ("" if required else "; default: data.path of --config"))
    config_flag(p, "--format", "data.format", help=FORMAT_HELP)


def _prepare_args(p: argparse.ArgumentParser) -> None:
    data_config_args(p)
    p.add_argument("--out", required=True, help="run directory to write manifest.csv into")
    p.add_argument("--config", help="YAML config (its data section is used)")
    config_flag(p, "--folds", "data.folds", type=int)
    config_flag(p, "--test-fraction", "data.test_fraction", type=float)
    config_flag(p, "--seed", "data.seed", type=int)
    p.add_argument("--verify", action="store_true", help="decode every image before writing")
    p.add_argument("--drop-bad", action="store_true",
                   help="drop unusable rows (listed in dropped.csv) instead of stopping")


@command("prepare", "validate a data set and write a lesion-grouped split manifest", _prepare_args)
def _prepare(args: argparse.Namespace) -> int:
    from kndnet.config import load_config
    from kndnet.data.manifest import describe, prepare
    cfg = load_config(args.config, config_overrides(args))
    result = prepare(cfg.data, args.out, verify=args.verify, drop_bad=args.drop_bad)
    print(f"format: {result.format} (read {cfg.data.path})")
    print(describe(result.manifest))
    if len(result.dropped):
        print(f"dropped {len(result.dropped)} row(s), listed in {Path(args.out) / 'dropped.csv'}")
    print(f"wrote {result.manifest_path}")
    return 0


def _synth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder to write the HAM10000-layout data into")
    p.add_argument("--lesions-per-class", type=positive_int, default=12)
    p.add_argument("--image-size", type=positive_int, default=64)
    p.add_argument("--seed", type=int, default=0)


@command("synth", "write a small synthetic HAM10000-layout data set", _synth_args)
def _synth(args: argparse.Namespace) -> int:
    from kndnet.data.synth import write_synthetic
    table = write_synthetic(args.out, args.lesions_per_class, args.image_size, seed=args.seed)
    print(f"wrote {len(table)} images of {table['lesion_id'].nunique()} lesions to {args.out}")
    return 0
